"""Throughput of the reference C kernels against erff GELU, ONNX Runtime and memcpy.

One run, the same buffers (default 32x128x1536 = 6.3 M values, one core): int8 codes of the
range [-9, 4.5]; their dequantized float32 values for the float kernels (float16 for the fp16
polynomial). Candidates, round by round in a shuffled order (min and median of the rounds):

* ``int8 table, scalar`` / ``int8 table, SIMD`` (AVX-512 VBMI, AVX2) - ``gelu_lut_s8_s8``;
* ``int8 grouped table, K=8`` - ``gelu_lut_grouped_s8_s8``: 8 tables over the last axis
  (1536 channels in a scattered channel -> group map, as ``partition_channels`` leaves them;
  and with the groups as contiguous runs, as after the FFN permutation), scalar;
* ``int8 interp 32`` - ``gelu_interp_s8_s8``;
* ``fp16 poly`` (16 x 3, float16 Horner): the AVX512-FP16 SIMD path, and the scalar loop with
  _Float16 conversions (``-mavx512fp16``, or F16C) and with the portable integer conversions;
* ``fp32 poly`` - ``gelu_poly_f32``: the portable C loop (no intrinsics; SSE2 from the
  compiler's vectoriser), AVX2 and AVX-512F; a 16 x 4 fit of [-9, 4.5] (float32 Horner) and the
  ``fp32-poly`` target's default (``build_exact_poly``: 36 x 8, stated bound 8 ulps);
* ``fp32 GELU via erff`` - ``0.5f * x * (1 + erff(x / sqrt 2))`` with glibc's ``erff``;
* ``ORT DQ->Gelu->Q`` - DequantizeLinear -> Gelu -> QuantizeLinear (opset 21), 1 thread;
* ``memcpy`` of the int8 buffer - the floor (and a plain AVX-512 load/store copy loop).

Also the fp32 polynomials' error on a dense float32 sample against float64 GELU (ulps where
``|GELU| >= 2**-14``, absolute error below).

Usage: ``python benchmarks/bench_kernels.py [--shape 32 128 1536] [--rounds 15]``
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gelu_quant.lut.ckernels import build_library
from gelu_quant.lut.grouped import build_grouped_lut
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.poly import PolySpec, build_exact_poly, build_poly
from gelu_quant.lut.table import build_lut
from gelu_quant.numerics import gelu

sys.path.insert(0, str(Path(__file__).parent))
from bench_gelulut import dq_gelu_q, session

EXTRA_C = r"""
#include <math.h>
#include <stddef.h>
#include <string.h>
void bench_gelu_erff(const float *in, float *out, size_t n);
void bench_memcpy(const void *in, void *out, size_t n);
void bench_gelu_erff(const float *in, float *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const float x = in[i];
        out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}
void bench_memcpy(const void *in, void *out, size_t n) { memcpy(out, in, n); }
void bench_copy_loop(const void *in, void *out, size_t n);
#if defined(__AVX512F__)
#include <immintrin.h>
void bench_copy_loop(const void *in, void *out, size_t n)
{
    const char *a = in;
    char *b = out;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        _mm512_storeu_si512((void *)(b + i), _mm512_loadu_si512((const void *)(a + i)));
    }
    memcpy(b + i, a + i, n - i);
}
#else
void bench_copy_loop(const void *in, void *out, size_t n) { memcpy(out, in, n); }
#endif
"""

LIBS = {
    "scalar": ["-DGELU_LUT_NO_SIMD"],
    "avx2": ["-mavx2"],
    "avx512": ["-mavx512vbmi", "-mavx512bw", "-mavx512vl", "-mavx512fp16"],
    "avx512ns": ["-mavx512vl", "-mavx512fp16", "-DGELU_POLY_NO_SIMD"],
    "f16c": ["-mf16c"],
    "portable": ["-DGELU_LUT_NO_SIMD", "-DGELU_POLY_F16_PORTABLE"],
}


def ptr(a: npt.NDArray[Any]) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def f32_ulp_key(a: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    i = a.view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def poly_error(
    spec: PolySpec,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    floor: float = 2.0**-14,
) -> str:
    g = gelu(x.astype(np.float64), spec.form)
    cr = g.astype(np.float32)
    scored = np.abs(g) >= floor
    ulps = np.abs(f32_ulp_key(y[scored]) - f32_ulp_key(cr[scored]))
    rel = np.abs(y[scored] - g[scored]) / np.abs(g[scored])
    small = np.abs(y[~scored].astype(np.float64) - g[~scored])
    return (
        f"fp32 poly error on {x.size} float32 inputs in [{spec.lo:g}, {spec.hi:g}]: max "
        f"{int(ulps.max())} ulp (mean {ulps.mean():.2f}; {100 * np.mean(ulps == 0):.1f} % "
        f"correctly rounded), max rel {rel.max():.3g} where |GELU| >= 2^{np.log2(floor):.0f}; "
        "max abs "
        f"{(small.max() if small.size else 0.0):.3g} below"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[32, 128, 1536])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=args.shape).astype(np.int8).ravel()
    n = q.size
    lut = build_lut(in_range=(-9.0, 4.5), form="exact")
    interp = build_interp_lut(segments=32, in_range=(-9.0, 4.5))
    p16 = build_poly(-9.0, 4.5, 16, 3)
    p32 = build_poly(-9.0, 4.5, 16, 4, io_dtype="float32", compute_dtype="float32")
    p32d = build_exact_poly(form="exact", io_dtype="float32", compute_dtype="float32")
    channels = args.shape[-1]
    kg = min(8, channels)
    scattered = np.random.default_rng(5).permutation(np.arange(channels) % kg)
    grouped = {
        "scattered": build_grouped_lut(
            scattered, [(-9.0 + g * 0.5, 4.5 + g * 2.0) for g in range(kg)]
        ),
        "runs": build_grouped_lut(
            np.sort(scattered), [(-9.0 + g * 0.5, 4.5 + g * 2.0) for g in range(kg)]
        ),
    }
    garr = {  # kept alive: the kernels get pointers into them
        how: {a: np.ascontiguousarray(v) for a, v in g.arrays().items()}
        for how, g in grouped.items()
    }
    xf = lut.in_qparams.dequantize(q, np.float32).astype(np.float32)
    xh = xf.astype(np.float16).view(np.uint16)

    tmp = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    (tmp / "extra.c").write_text(EXTRA_C)
    libs = {
        k: ctypes.CDLL(str(build_library(tmp / k, cflags=f, extra_sources=[tmp / "extra.c"])))
        for k, f in LIBS.items()
    }
    for lib in libs.values():
        lib.gelu_lut_simd.restype = ctypes.c_char_p
        lib.gelu_poly_f16_arith.restype = ctypes.c_char_p

    o8 = np.zeros(n, np.int8)
    o16 = np.zeros(n, np.uint16)
    o32 = np.zeros(n, np.float32)
    N = ctypes.c_size_t(n)
    sz, sh = ctypes.c_size_t, ctypes.c_uint

    def p16_args(spec: PolySpec) -> tuple[Any, ...]:
        a = {k: np.ascontiguousarray(v) for k, v in spec.arrays().items()}
        return (
            sz(spec.segments),
            sz(spec.degree),
            ptr(a["breakpoints"].view(np.uint16)),
            ptr(a["origins"].view(np.uint16)),
            ptr(a["coefficients"].view(np.uint16)),
        )

    a32 = {k: np.ascontiguousarray(v) for k, v in p32.arrays().items()}
    p32_args = (
        sz(p32.segments),
        sz(p32.degree),
        ptr(a32["breakpoints"]),
        ptr(a32["origins"]),
        ptr(a32["coefficients"]),
    )

    def f32_args(spec: PolySpec) -> tuple[Any, ...]:
        a = {k: np.ascontiguousarray(v) for k, v in spec.arrays().items()}
        keep.append(a)  # the kernels get pointers into them
        return (
            sz(spec.segments),
            sz(spec.degree),
            ptr(a["breakpoints"]),
            ptr(a["origins"]),
            ptr(a["coefficients"]),
        )

    keep: list[dict[str, npt.NDArray[Any]]] = []
    p32d_args = f32_args(p32d)
    dshape = f"{p32d.segments}x{p32d.degree}"
    a16 = p16_args(p16)
    ort_sess = session(dq_gelu_q(lut, "none"), 1)
    feed = {"x": q.reshape(args.shape)}

    def c(lib: str, fn: str, *a: Any) -> Callable[[], object]:
        f = getattr(libs[lib], fn)
        f.restype = None
        return lambda: f(*a)

    simd_name = libs["avx512"].gelu_lut_simd().decode()
    cands: dict[str, Callable[[], object]] = {
        "memcpy (int8 bytes)": c("scalar", "bench_memcpy", ptr(q), ptr(o8), N),
        "copy loop, avx512 (int8 bytes)": c("avx512", "bench_copy_loop", ptr(q), ptr(o8), N),
        "int8 table, scalar": c("scalar", "gelu_lut_s8_s8", ptr(q), ptr(o8), N, ptr(lut.table)),
        f"int8 table, SIMD {simd_name}": c(
            "avx512", "gelu_lut_s8_s8", ptr(q), ptr(o8), N, ptr(lut.table)
        ),
        "int8 table, SIMD avx2": c("avx2", "gelu_lut_s8_s8", ptr(q), ptr(o8), N, ptr(lut.table)),
        **{
            f"int8 grouped K={kg}, {how}, scalar": c(
                "scalar",
                "gelu_lut_grouped_s8_s8",
                ptr(q),
                ptr(o8),
                N,
                sz(channels),
                ptr(garr[how]["channel_group"]),
                ptr(garr[how]["tables"]),
            )
            for how in grouped
        },
        "int8 interp 32, scalar": c(
            "scalar", "gelu_interp_s8_s8", ptr(q), ptr(o8), N, ptr(interp.knots), sh(interp.shift)
        ),
        "fp16 poly 16x3, avx512fp16 SIMD": c("avx512", "gelu_poly_f16", ptr(xh), ptr(o16), N, *a16),
        "fp16 poly 16x3, avx512fp16 cvt": c(
            "avx512ns", "gelu_poly_f16", ptr(xh), ptr(o16), N, *a16
        ),
        "fp16 poly 16x3, F16C cvt": c("f16c", "gelu_poly_f16", ptr(xh), ptr(o16), N, *a16),
        "fp16 poly 16x3, portable": c("portable", "gelu_poly_f16", ptr(xh), ptr(o16), N, *a16),
        "fp32 poly 16x4, portable": c("scalar", "gelu_poly_f32", ptr(xf), ptr(o32), N, *p32_args),
        "fp32 poly 16x4, avx2": c("avx2", "gelu_poly_f32", ptr(xf), ptr(o32), N, *p32_args),
        "fp32 poly 16x4, avx512f": c("avx512", "gelu_poly_f32", ptr(xf), ptr(o32), N, *p32_args),
        **{
            f"fp32 poly {dshape} default, {k}": c(
                lib, "gelu_poly_f32", ptr(xf), ptr(o32), N, *p32d_args
            )
            for k, lib in (("portable", "scalar"), ("avx2", "avx2"), ("avx512f", "avx512"))
        },
        "fp32 GELU via erff": c("scalar", "bench_gelu_erff", ptr(xf), ptr(o32), N),
        "ORT DQ->Gelu->Q (1 thread)": lambda: ort_sess.run(None, feed),
    }
    # results checked against the specs before timing
    cands["int8 table, scalar"]()
    assert np.array_equal(o8, lut.lookup(q))
    cands[f"int8 table, SIMD {simd_name}"]()
    assert np.array_equal(o8, lut.lookup(q))
    cands["int8 table, SIMD avx2"]()
    assert np.array_equal(o8, lut.lookup(q))
    for how, g in grouped.items():
        cands[f"int8 grouped K={kg}, {how}, scalar"]()
        assert np.array_equal(o8, g.lookup(q.reshape(-1, channels)).ravel())
    cands["int8 interp 32, scalar"]()
    assert np.array_equal(o8, interp.lookup(q))
    for k in ("avx512fp16 SIMD", "avx512fp16 cvt", "F16C cvt", "portable"):
        cands[f"fp16 poly 16x3, {k}"]()
        assert np.array_equal(o16, p16.evaluate(xh.view(np.float16)).view(np.uint16))
    for k in ("portable", "avx2", "avx512f"):
        cands[f"fp32 poly 16x4, {k}"]()
        assert np.array_equal(o32.view(np.uint32), p32.evaluate(xf).view(np.uint32))
        cands[f"fp32 poly {dshape} default, {k}"]()
        assert np.array_equal(o32.view(np.uint32), p32d.evaluate(xf).view(np.uint32))

    times: dict[str, list[float]] = {k: [] for k in cands}
    for r in cands.values():
        r()
    order = list(cands)
    shuffle = np.random.default_rng(3)
    for _ in range(args.rounds):
        # a new order every round: no candidate always runs after the one that evicts its data
        for k in shuffle.permutation(order):
            t = time.perf_counter()
            cands[str(k)]()
            times[str(k)].append(time.perf_counter() - t)

    ns = {k: (min(v) / n * 1e9, statistics.median(v) / n * 1e9) for k, v in times.items()}
    ref_ort = ns["ORT DQ->Gelu->Q (1 thread)"][0]
    ref_mem = ns["memcpy (int8 bytes)"][0]
    ref_erf = ns["fp32 GELU via erff"][0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{n} values ({'x'.join(map(str, args.shape))}), one core, {args.rounds} rounds in "
        f"shuffled order; onnxruntime {ort.__version__}; load average {load:.1f}"
    )
    print("ratios from the min: ORT/x (>1: faster than ORT), x/memcpy, erff/x")
    print(f"{'kernel':<37}{'min ns':>9}{'median ns':>11}{'ORT/x':>8}{'x/memcpy':>10}{'erff/x':>8}")
    for k, (lo, med) in ns.items():
        print(
            f"{k:<37}{lo:>9.3f}{med:>11.3f}{ref_ort / lo:>8.2f}{lo / ref_mem:>10.2f}"
            f"{ref_erf / lo:>8.2f}"
        )

    per_tensor = ns["int8 table, scalar"][0]
    for how in grouped:
        lo = ns[f"int8 grouped K={kg}, {how}, scalar"][0]
        print(f"grouped ({how}) / per-tensor table, scalar: {lo / per_tensor:.2f}x the ns/element")

    # fp32 polynomial error on a dense sample of each one's domain (the portable kernel's output)
    for spec, spec_args, floor, note in (
        (p32, p32_args, 2.0**-14, "no stated bound: a 16 x 4 fit"),
        (p32d, p32d_args, 2.0**-126, "stated bound 8 ulps, 2^-20 rel"),
    ):
        xs = np.concatenate(
            [
                np.random.default_rng(1).uniform(spec.lo, spec.hi, 1_000_000).astype(np.float32),
                np.asarray(spec.breakpoints, np.float32),
            ]
        )
        ys = np.empty_like(xs)
        libs["scalar"].gelu_poly_f32(ptr(xs), ptr(ys), ctypes.c_size_t(xs.size), *spec_args)
        assert np.array_equal(ys.view(np.uint32), spec.evaluate(xs).view(np.uint32))
        print(f"{spec.segments}x{spec.degree} ({note}): {poly_error(spec, xs, ys, floor)}")


if __name__ == "__main__":
    main()
