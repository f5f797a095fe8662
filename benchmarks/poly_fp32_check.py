"""Exhaustive check of the default float32 polynomials: every float32 input of the fitted domain.

For each form (exact, tanh, quick) the default ``fp32-poly`` spec (:func:`build_exact_poly`) is
evaluated on *every* float32 value of its fitted domain ``[L, H]`` (about 2^31 values: both
signs, subnormals and zeros included; beyond the domain the tails 0 and ``x`` are exact by
construction of ``L``, ``H`` -- see :func:`gelu_quant.numerics.tail_bounds`) and scored against
float64 GELU (``scipy.special.erfc`` / numpy ``exp`` / ``tanh``, vectorised, far more accurate
than the 2^-20 asked):

* max float32 ulps from the correctly rounded GELU where ``|GELU| >= 2^-126`` (bound: 8);
* max relative error there (bound: 2^-20), the worst input;
* max absolute error where ``|GELU| < 2^-126`` (bound: 2^-126);
* % correctly rounded.

Single core, numpy, chunks of 2^22 inputs, each segment's slice evaluated with its scalar
coefficients (the same float32 operations as :meth:`PolySpec.evaluate`, checked against it on
every first chunk).
Run: ``python benchmarks/poly_fp32_check.py [--form exact tanh quick] [--shape K D]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import numpy.typing as npt
from scipy.special import erfc

from gelu_quant.lut.poly import PolySpec, build_exact_poly

F64 = npt.NDArray[np.float64]


def reference(x: F64, form: str) -> F64:
    """Float64 GELU of each form, vectorised and accurate in both tails."""
    if form == "exact":
        return np.asarray(0.5 * x * erfc(-x / math.sqrt(2.0)), np.float64)
    if form == "tanh":
        w = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        with np.errstate(over="ignore"):
            return np.asarray(x / (1.0 + np.exp(-2.0 * w)), np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(x / (1.0 + np.exp(-1.702 * x)), np.float64)


def ordered(y: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    b = y.view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def evaluate_sorted(spec: PolySpec, x32: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """:meth:`PolySpec.evaluate` for inputs ascending (or descending) inside the fitted domain,
    segment by segment with scalar coefficients: the same float32 operations, no gathers."""
    out = np.empty_like(x32)
    desc = x32.size > 1 and x32[0] > x32[-1]
    xs = x32[::-1] if desc else x32
    ys = out[::-1] if desc else out
    inner = np.asarray(spec.breakpoints[1:-1], np.float32)
    cuts = [0, *np.searchsorted(xs, inner, side="left").tolist(), xs.size]
    for k in range(spec.segments):
        a, b = cuts[k], cuts[k + 1]
        if a == b:
            continue
        t = xs[a:b] - np.float32(spec.origins[k])
        c = spec.coefficients[k]
        acc = np.full(b - a, c[-1], np.float32)
        for j in range(spec.degree - 1, -1, -1):
            acc *= t
            acc += c[j]
        ys[a:b] = acc
    return out


def check(form: str, chunk_bits: int, shape: tuple[int, int] | None = None) -> dict[str, float]:
    k, d = shape if shape is not None else (None, None)
    spec = build_exact_poly(
        form=form,  # type: ignore[arg-type]
        io_dtype="float32",
        compute_dtype="float32",
        segments=k,
        degree=d,
    )
    lo, hi = spec.domain
    ranges = [
        (0, int(np.float32(hi).view(np.uint32))),  # +0 .. H
        (0x80000000, int(np.float32(lo).view(np.uint32))),  # -0 .. L
    ]
    n = 0
    max_ulp = 0
    max_rel = 0.0
    worst = math.nan
    max_abs_below = 0.0
    exact_count = 0
    scored = 0
    step = 1 << chunk_bits
    for a, b in ranges:
        for start in range(a, b + 1, step):
            bits = np.arange(start, min(start + step, b + 1), dtype=np.uint64).astype(np.uint32)
            x32 = bits.view(np.float32)
            y = evaluate_sorted(spec, x32)
            if start == a:  # the fast path is the spec's own evaluation
                probe = np.random.default_rng(0).integers(0, x32.size, 4096)
                assert np.array_equal(y[probe], spec.evaluate(x32[probe]))
            g = reference(x32.astype(np.float64), form)
            normal = np.abs(g) >= 2.0**-126
            err = np.abs(y.astype(np.float64) - g)
            if normal.any():
                ulp = np.abs(ordered(y[normal]) - ordered(g[normal].astype(np.float32)))
                max_ulp = max(max_ulp, int(ulp.max()))
                exact_count += int(np.sum(ulp == 0))
                scored += int(ulp.size)
                rel = err[normal] / np.abs(g[normal])
                i = int(np.argmax(rel))
                if rel[i] > max_rel:
                    max_rel, worst = float(rel[i]), float(x32[normal][i])
            if (~normal).any():
                max_abs_below = max(max_abs_below, float(err[~normal].max()))
            n += int(bits.size)
    return {
        "segments": spec.segments,
        "degree": spec.degree,
        "lo": lo,
        "hi": hi,
        "inputs": n,
        "max_ulp": max_ulp,
        "max_rel": max_rel,
        "worst_x": worst,
        "max_abs_below_normal": max_abs_below,
        "pct_correctly_rounded": 100.0 * exact_count / max(scored, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--form", nargs="+", default=["exact", "tanh", "quick"])
    ap.add_argument("--chunk-bits", type=int, default=22)
    ap.add_argument(
        "--shape", type=int, nargs=2, default=None, metavar=("K", "D"), help="not the default"
    )
    args = ap.parse_args()
    print("| form | spec | domain | float32 inputs | max ulp | max rel | worst x | "
          "max abs below 2^-126 | % correctly rounded | CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for form in args.form:
        t0 = time.process_time()
        r = check(form, args.chunk_bits, None if args.shape is None else tuple(args.shape))
        dt = time.process_time() - t0
        print(
            f"| {form} | {r['segments']} x {r['degree']} | [{r['lo']:.6g}, {r['hi']:.6g}] | "
            f"{r['inputs']} | {r['max_ulp']} | {r['max_rel']:.3e} (2^{math.log2(r['max_rel']):.2f})"
            f" | {r['worst_x']:.7g} | {r['max_abs_below_normal']:.3e} | "
            f"{r['pct_correctly_rounded']:.2f} | {dt:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
