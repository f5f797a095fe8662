"""Piecewise-polynomial GELU vs the baselines, scored on every float16 input of [-8, 8].

Prints a markdown table of (segments, degree, arithmetic) -> max ulp, % correctly rounded and
max absolute error where |GELU| < 2^-14, for 8/16/32 segments x degree 2/3/4 x float16/float32
Horner, next to the tanh formula, QuickGELU and I-BERT's i-GELU over the same inputs, plus a
naive fit in global coordinates and uniform breakpoints for contrast, and the float32-in/out
polynomial's absolute and relative errors; then the *default* specs of every target and form
(max ulp, % correctly rounded). Run: ``python benchmarks/poly_table.py [--quick]``
(``--defaults``: only the defaults table).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from gelu_quant.lut import poly_fit as pf
from gelu_quant.lut.baselines import IGeluSpec, QuickGeluSpec, TanhGeluSpec
from gelu_quant.lut.error_report import fp16_inputs, score_fp16, score_fp32
from gelu_quant.lut.poly import PolySpec, build_exact_poly, build_poly
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.numerics import gelu

LO, HI = -8.0, 8.0


def row(name: str, spec: GeluApprox, x16: np.ndarray, seconds: float | None) -> str:
    r = score_fp16(x16, spec.evaluate(x16))
    t = "" if seconds is None else f"{seconds:.1f}"
    return (
        f"| {name} | {r.max_ulp} | {r.pct_correctly_rounded:.2f} | {r.mean_ulp:.3f} | "
        f"{r.max_abs_below_normal:.2e} ({r.n_below_normal_over} over) | {t} |"
    )


def global_coordinates(spec: PolySpec) -> PolySpec:
    """The same breakpoints, each segment fitted in the global coordinate x (origin 0) and
    rounded to float16 directly: what local coordinates avoid."""
    grid = pf.Grid.build(spec.lo, spec.hi, spec.io_dtype, spec.form)
    rows = []
    bp = spec.breakpoints
    for k in range(spec.segments):
        sel = (grid.x >= bp[k]) & (grid.x <= bp[k + 1])
        x, g, unit = grid.x[sel], grid.g[sel], grid.unit[sel]
        if not spec.coefficients[k, 2:].any():  # exact zero / identity segments stay as they are
            rows.append(spec.coefficients[k])
            continue
        c = pf.fit_local(x, g, 1.0 / unit, spec.degree)
        rows.append(np.clip(c, -65504, 65504).astype(spec.coefficients.dtype))
    return PolySpec(
        form=spec.form,
        lo=spec.lo,
        hi=spec.hi,
        breakpoints=spec.breakpoints,
        origins=(0.0,) * spec.segments,
        coefficients=np.stack(rows),
        io_dtype=spec.io_dtype,
        compute_dtype=spec.compute_dtype,
    )


def defaults() -> None:
    """The default specs conversion uses (fitted where their tails are exact), every form."""
    print("\n# default polynomials (build_exact_poly), scored over the whole real line:")
    print("# fp16: every finite float16 input; fp32: a dense sample (2e6 points of the fitted")
    print("# domain, 1e5 near 0, around every breakpoint; benchmarks/poly_fp32_check.py checks")
    print("# every float32)\n")
    print("| target | form | spec (cost) | fitted domain | max ulp | % correctly rounded | "
          "max rel / abs below normal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    all16 = fp16_inputs(-65504.0, 65504.0)
    for io, cp, target in (
        ("float16", "float16", "fp16-poly"),
        ("float16", "float32", "fp16-poly-fp32acc"),
        ("float32", "float32", "fp32-poly"),
    ):
        for form in ("exact", "tanh", "quick"):
            spec = build_exact_poly(form=form, io_dtype=io, compute_dtype=cp)  # type: ignore[arg-type]
            lo, hi = spec.domain
            shape = f"{spec.segments} x {spec.degree} ({spec.cost})"
            if io == "float16":
                r = score_fp16(all16, spec.evaluate(all16), form)  # type: ignore[arg-type]
                extra = f"abs below 2^-14 {r.max_abs_below_normal:.2e}"
                mx, pct = r.max_ulp, r.pct_correctly_rounded
            else:
                rng = np.random.default_rng(0)
                parts = [np.linspace(lo, hi, 2_000_001), np.geomspace(1e-38, 1.0, 50_000)]
                parts += [-parts[1], rng.uniform(lo, hi, 200_000)]
                for b in spec.breakpoints:
                    parts.append(np.float32(b) + np.arange(-256, 257) * np.spacing(np.float32(b)))
                x32 = np.unique(np.concatenate(parts).astype(np.float32))
                f = score_fp32(x32, spec.evaluate(x32), form)  # type: ignore[arg-type]
                extra = f"rel {f.max_rel:.2e}, abs below 2^-126 {f.max_abs_below_normal:.1e}"
                mx, pct = f.max_ulp, f.pct_correctly_rounded
            print(
                f"| {target} | {form} | {shape} | [{lo:.6g}, {hi:.6g}] | {mx} | {pct:.2f} | "
                f"{extra} |"
            )


def main() -> None:
    quick = "--quick" in sys.argv
    if "--defaults" in sys.argv:
        defaults()
        return
    x16 = fp16_inputs(LO, HI)
    print(f"# GELU on [{LO:g}, {HI:g}]: every float16 input ({x16.size}), exact GELU rounded once")
    print("# ulps where |GELU| >= 2^-14; absolute error (target <= 2^-14 = 6.10e-05) below\n")
    print("| spec | max ulp | % correctly rounded | mean ulp | max abs below 2^-14 | build CPU s |")
    print("|---|---|---|---|---|---|")
    segs = (16,) if quick else (8, 16, 32)
    degs = (4,) if quick else (2, 3, 4)
    kept: dict[tuple[int, int, str], PolySpec] = {}
    for k in segs:
        for d in degs:
            for arith in ("float16", "float32"):
                t0 = time.process_time()
                spec = build_poly(LO, HI, k, d, io_dtype="float16", compute_dtype=arith)
                dt = time.process_time() - t0
                kept[k, d, arith] = spec
                name = f"poly {k} seg x deg {d}, {arith[5:]}-bit Horner"
                print(row(name, spec, x16, dt))
    for arith in ("float16", "float32"):
        t0 = time.process_time()
        spec = build_poly(LO, HI, 16, 4, compute_dtype=arith, breakpoints="uniform")
        dt = time.process_time() - t0
        print(row(f"poly 16 x 4, {arith[5:]}-bit, uniform breakpoints", spec, x16, dt))
    naive = global_coordinates(kept[16, 4, "float16"])
    print(row("poly 16 x 4, 16-bit, global coordinates (naive)", naive, x16, None))
    for arith in ("float16", "float32"):
        bits = arith[5:]
        print(row(f"tanh formula, {bits}-bit", TanhGeluSpec(LO, HI, "float16", arith), x16, None))
        print(row(f"QuickGELU, {bits}-bit", QuickGeluSpec(LO, HI, "float16", arith), x16, None))
    for bits in (8, 16):
        spec = IGeluSpec(LO, HI, in_bits=bits, io_dtype="float16")
        print(row(f"i-GELU (I-BERT), int{bits} input, shift {spec.shift_bits}", spec, x16, None))

    defaults()

    print("\n# float32 in/out, float32 Horner, 16 segments x degree 4: dense grid of 2e6 points")
    t0 = time.process_time()
    s32 = build_poly(LO, HI, 16, 4, io_dtype="float32", compute_dtype="float32")
    dt = time.process_time() - t0
    x = np.linspace(LO, HI, 2_000_001).astype(np.float32)
    exact = gelu(x.astype(np.float64))
    err = np.abs(s32.evaluate(x).astype(np.float64) - exact)
    big = np.abs(exact) >= 2.0**-14
    rel = np.max(err[big] / np.abs(exact[big]))
    print(f"max abs {err.max():.3e}, max rel (|GELU| >= 2^-14) {rel:.3e}, build {dt:.1f} CPU s")


if __name__ == "__main__":
    main()
