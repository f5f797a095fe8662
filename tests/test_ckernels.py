"""The reference C kernels, compiled with -Werror, bit for bit against the numpy specs.

Oracles: the numpy reference of each spec (``lookup`` / ``evaluate``, whose arithmetic is exactly
specified: integer code paths, IEEE float16 / float32 basic operations) and, for the SIMD table
paths, ``table[code ^ flip]`` indexed in numpy. Every int8 / uint8 code, every int16 code for
int16 tables, every float16 bit pattern, and a dense float32 sample with all the edge cases.
Shared libraries are built once per session and compiler configuration.
"""

from __future__ import annotations

import ctypes
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gelu_quant.errors import BadInputError
from gelu_quant.lut.baselines import TanhGeluSpec
from gelu_quant.lut.ckernels import (
    KERNELS,
    build_library,
    find_c_compiler,
    kernel_call,
    kernel_files,
    kernel_source,
)
from gelu_quant.lut.interp import InterpLutSpec, build_interp_lut
from gelu_quant.lut.poly import PolySpec, build_poly
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.table import LutSpec, build_lut
from gelu_quant.qparams import QParams

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler (gcc/clang/$CC)")

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


CPU = _cpu_flags()

#: name -> (extra cflags, CPU flags needed to run it, x86 only)
CONFIGS: dict[str, tuple[list[str], set[str], bool]] = {
    # the compiler's baseline target: scalar tables, _Float16 conversions where it has them
    "default": ([], set(), False),
    # integer-only float16 conversions, no SIMD
    "portable": (["-DGELU_LUT_NO_SIMD", "-DGELU_POLY_F16_PORTABLE"], set(), False),
    "ssse3": (["-mssse3"], {"ssse3"}, True),
    "avx2": (["-mavx2"], {"avx2"}, True),
    # vpermi2b tables and hardware float16 conversions
    "avx512": (
        ["-mavx512vbmi", "-mavx512bw", "-mavx512fp16", "-mavx512vl"],
        {"avx512vbmi", "avx512bw", "avx512_fp16", "avx512vl"},
        True,
    ),
    # GNU mode with FMA hardware and contraction allowed: the kernels' pragmas must keep a * b + c
    # unfused
    "gnu-native-fma": (["-std=gnu99", "-march=native", "-ffp-contract=fast"], {"fma"}, True),
    # the portable (blocked, auto-vectorised) fp32 polynomial loop at -O3 with wide vectors, FMA
    # hardware and contraction allowed: still the spec's separately rounded operations
    "portable-native-fma": (
        ["-std=gnu99", "-march=native", "-O3", "-ffp-contract=fast", "-DGELU_POLY_NO_SIMD"],
        {"fma"},
        True,
    ),
}


@pytest.fixture(scope="session")
def kernel_lib(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ctypes.CDLL]:
    """``kernel_lib(config)``: the kernels compiled with that configuration (skips if it
    cannot run on this machine)."""
    cache: dict[str, ctypes.CDLL] = {}

    def get(config: str) -> ctypes.CDLL:
        flags, needs, x86_only = CONFIGS[config]
        if x86_only and not X86:
            pytest.skip(f"{config}: x86-64 flags")
        if not needs <= CPU:
            pytest.skip(f"{config}: this CPU lacks {', '.join(sorted(needs - CPU))}")
        if config not in cache:
            d = tmp_path_factory.mktemp(f"ckernels-{config}")
            cache[config] = ctypes.CDLL(str(build_library(d, cflags=["-Werror", *flags])))
        return cache[config]

    return get


def _arg(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        assert a.flags.c_contiguous
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, int):
        return ctypes.c_size_t(a)
    return a


def run(
    lib: ctypes.CDLL, fn: str, x: npt.NDArray[Any], out_dtype: Any, *args: Any
) -> npt.NDArray[Any]:
    """Call ``fn(in, out, n, *args)``; arrays pass as pointers, ints as size_t."""
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=out_dtype)
    f = getattr(lib, fn)
    f.restype = None
    f(_arg(x), _arg(out), ctypes.c_size_t(x.size), *map(_arg, args))
    return out


def bits(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The raw bit patterns of an array (floats compared bit for bit, NaNs included)."""
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


_SFX = {"int8": "s8", "uint8": "u8", "int16": "s16", "float16": "f16", "float32": "f32"}
_OUT_NP = {"float16": np.uint16, "float32": np.float32}


def lut_out(spec: LutSpec, lib: ctypes.CDLL) -> npt.NDArray[Any]:
    codes = spec.in_qparams.codes()
    fn = f"gelu_lut_{_SFX[spec.in_qparams.dtype]}_{_SFX[spec.out_dtype]}"
    table = np.ascontiguousarray(spec.table)
    if spec.out_dtype == "float16":
        table = table.view(np.uint16)
    return run(lib, fn, codes, table.dtype, table)


# -- full tables --------------------------------------------------------------------------------
LUT_CASES = [
    ("int8", (-9.0, 4.5)),
    ("int8", (-3.0, 3.0)),
    ("int8", (-17.0, 25.0)),
    ("uint8", (-6.0, 9.0)),
    ("uint8", (0.25, 7.0)),
]


@pytest.mark.parametrize("config", ["default", "avx512"])
@pytest.mark.parametrize("form", ["exact", "tanh"])
@pytest.mark.parametrize("out_dtype", ["int8", "uint8", "int16", "float16", "float32"])
@pytest.mark.parametrize(("in_dtype", "rng"), LUT_CASES)
def test_lut_every_code(
    kernel_lib: Callable[[str], ctypes.CDLL],
    config: str,
    form: str,
    out_dtype: str,
    in_dtype: str,
    rng: tuple[float, float],
) -> None:
    spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)  # type: ignore[arg-type]
    want = spec.lookup(spec.in_qparams.codes())
    got = lut_out(spec, kernel_lib(config))
    assert np.array_equal(bits(got), bits(want))


@pytest.mark.parametrize(
    "qp",
    [QParams(0.05, -20, "int8"), QParams(0.1, 0, "int8"), QParams(0.03, 200, "uint8")],
)
def test_lut_explicit_qparams_and_arbitrary_tables(
    kernel_lib: Callable[[str], ctypes.CDLL], qp: QParams
) -> None:
    lib = kernel_lib("default")
    spec = build_lut(in_qparams=qp, out_dtype="int8", form="exact")
    assert np.array_equal(lut_out(spec, lib), spec.lookup(qp.codes()))
    # a random table: any index error shows, whatever GELU's shape
    rng = np.random.default_rng(7)
    for out in ("int8", "int16", "float32"):
        oq = None if out == "float32" else QParams(0.1, 0, out)  # type: ignore[arg-type]
        table = (
            rng.standard_normal(256).astype(np.float32)
            if out == "float32"
            else rng.integers(-128, 128, 256).astype(np.int8 if out == "int8" else np.int16)
        )
        arb = LutSpec(in_qparams=qp, out_dtype=out, out_qparams=oq, form="exact", table=table)  # type: ignore[arg-type]
        assert np.array_equal(bits(lut_out(arb, lib)), bits(arb.lookup(qp.codes())))


@pytest.mark.parametrize("out_dtype", ["int8", "uint8", "int16", "float16", "float32"])
def test_lut_int16_every_code(kernel_lib: Callable[[str], ctypes.CDLL], out_dtype: str) -> None:
    spec = build_lut(in_range=(-10.0, 12.0), in_dtype="int16", out_dtype=out_dtype)  # type: ignore[arg-type]
    want = spec.lookup(spec.in_qparams.codes())
    assert want.size == 65536
    assert np.array_equal(bits(lut_out(spec, kernel_lib("default"))), bits(want))


SIMD_NAMES = {"default": None, "portable": "scalar", "ssse3": "ssse3", "avx2": "avx2"}
SIMD_NAMES["avx512"] = "avx512vbmi"
LENGTHS = [0, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4099]


@pytest.mark.parametrize("config", list(SIMD_NAMES))
def test_lut_simd_path_matches_scalar_on_odd_lengths(
    kernel_lib: Callable[[str], ctypes.CDLL], config: str
) -> None:
    lib = kernel_lib(config)
    lib.gelu_lut_simd.restype = ctypes.c_char_p
    name = lib.gelu_lut_simd().decode()
    if SIMD_NAMES[config] is not None:
        assert name == SIMD_NAMES[config]
    rng = np.random.default_rng(11)
    for trial in range(4):
        table = rng.integers(0, 256, 256).astype(np.uint8)
        for flip in (0, 0x80):
            for n in LENGTHS:
                buf = rng.integers(0, 256, n + 1).astype(np.uint8)
                x = buf[1:] if trial % 2 else buf[:n]  # odd addresses too
                want = table[x ^ flip]
                simd = run(lib, "gelu_lut_bytes", x, np.uint8, table, ctypes.c_uint(flip))
                scalar = run(lib, "gelu_lut_bytes_scalar", x, np.uint8, table, ctypes.c_uint(flip))
                assert np.array_equal(simd, want), (config, n, flip)
                assert np.array_equal(scalar, want), (config, n, flip)
    # the typed entry point, in place
    spec = build_lut(in_range=(-9.0, 4.5))
    x = rng.integers(-128, 128, 1001).astype(np.int8)
    want = spec.lookup(x)
    lib.gelu_lut_s8_s8.restype = None
    lib.gelu_lut_s8_s8(_arg(x), _arg(x), ctypes.c_size_t(x.size), _arg(spec.table))
    assert np.array_equal(x, want)


# -- interpolated tables ------------------------------------------------------------------------
@pytest.mark.parametrize("segments", [16, 32, 64, 128])
@pytest.mark.parametrize("form", ["exact", "tanh"])
@pytest.mark.parametrize("out_dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize(("in_dtype", "rng"), [("int8", (-9.0, 4.5)), ("uint8", (-4.0, 8.0))])
def test_interp_every_code(
    kernel_lib: Callable[[str], ctypes.CDLL],
    segments: int,
    form: str,
    out_dtype: str,
    in_dtype: str,
    rng: tuple[float, float],
) -> None:
    spec = build_interp_lut(
        segments=segments,
        in_range=rng,
        in_dtype=in_dtype,  # type: ignore[arg-type]
        out_dtype=out_dtype,  # type: ignore[arg-type]
        form=form,  # type: ignore[arg-type]
    )
    codes = spec.in_qparams.codes()
    fn = f"gelu_interp_{_SFX[in_dtype]}_{_SFX[out_dtype]}"
    got = run(
        kernel_lib("default"),
        fn,
        codes,
        spec.out_qparams.np_dtype,
        spec.knots,
        ctypes.c_uint(spec.shift),
    )
    assert np.array_equal(got, spec.lookup(codes))


def test_interp_arbitrary_knots_wrap_like_int32(kernel_lib: Callable[[str], ctypes.CDLL]) -> None:
    """Knots anywhere in int32 (also where the int32 arithmetic wraps) give numpy's codes."""
    lib = kernel_lib("portable")
    rng = np.random.default_rng(3)
    for segments in (16, 128):
        for scale in (300, 40_000, 2**31 - 1):
            knots = rng.integers(-scale, scale, segments + 1, endpoint=True).astype(np.int32)
            knots[0] = np.iinfo(np.int32).min if scale > 2**20 else knots[0]
            for in_dt, out_dt in (("int8", "int8"), ("uint8", "int16"), ("int8", "uint8")):
                spec = InterpLutSpec(
                    in_qparams=QParams(0.1, 0, in_dt),  # type: ignore[arg-type]
                    out_qparams=QParams(0.1, 0, out_dt),  # type: ignore[arg-type]
                    form="exact",
                    knots=knots,
                )
                codes = spec.in_qparams.codes()
                got = run(
                    lib,
                    f"gelu_interp_{_SFX[in_dt]}_{_SFX[out_dt]}",
                    codes,
                    spec.out_qparams.np_dtype,
                    knots,
                    ctypes.c_uint(spec.shift),
                )
                assert np.array_equal(got, spec.lookup(codes)), (segments, scale, in_dt, out_dt)


# -- float16 polynomials ------------------------------------------------------------------------
ALL_F16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


@pytest.fixture(scope="session")
def f16_specs() -> list[PolySpec]:
    rng = np.random.default_rng(5)
    wild = rng.uniform(-600, 600, (4, 4)).astype(np.float16)  # overflows to inf, then NaN
    return [
        build_poly(-8, 8, 8, 3),
        build_poly(-9, 4.5, 16, 3),
        build_poly(-3, 2, 4, 2, form="tanh"),
        build_poly(0.5, 6, 4, 2),  # a range without 0
        build_poly(-3, 5, 8, 3, breakpoints="uniform"),
        build_poly(-8, 8, 8, 4, compute_dtype="float32"),
        build_poly(-6, 3, 4, 3, compute_dtype="float32", form="tanh"),
        PolySpec(
            form="exact",
            lo=-60000.0,
            hi=60000.0,
            breakpoints=(-60000.0, -2.5, 0.0, 3.0, 60000.0),
            origins=(-4.0, 0.0, 1.5, 0.0),
            coefficients=wild,
            io_dtype="float16",
            compute_dtype="float16",
        ),
        random_f16_poly(32, 4, 1),  # the largest SIMD table
        random_f16_poly(40, 2, 2),  # past it: scalar
    ]


def random_f16_poly(segments: int, degree: int, seed: int) -> PolySpec:
    """Arbitrary float16 coefficients (no fit), for the SIMD table limits (K > 32)."""
    rng = np.random.default_rng(seed)
    bp = np.unique(np.concatenate([[0.0], rng.uniform(-30, 30, 3 * segments), [-30.0, 30.0]]))
    bp = np.unique(bp.astype(np.float16).astype(np.float64))
    inner = rng.choice(bp[(bp > -30) & (bp < 30) & (bp != 0)], segments - 2, replace=False)
    bp = np.unique(np.concatenate([[-30.0, 0.0, 30.0], inner]))
    k = bp.size - 1
    return PolySpec(
        form="exact",
        lo=-30.0,
        hi=30.0,
        breakpoints=tuple(bp),
        origins=tuple(float(v) for v in rng.uniform(-3, 3, k).astype(np.float16)),
        coefficients=rng.uniform(-1, 1, (k, degree + 1)).astype(np.float16),
        io_dtype="float16",
        compute_dtype="float16",
    )


def poly_args(spec: PolySpec) -> tuple[Any, ...]:
    a = spec.arrays()
    conv = [np.ascontiguousarray(a[k]) for k in ("breakpoints", "origins", "coefficients")]
    conv = [v.view(np.uint16) if v.dtype == np.float16 else v for v in conv]
    return (spec.segments, spec.degree, *conv)


@pytest.mark.parametrize("config", ["default", "portable", "avx512", "gnu-native-fma"])
def test_poly_f16_every_input(
    kernel_lib: Callable[[str], ctypes.CDLL], f16_specs: list[PolySpec], config: str
) -> None:
    lib = kernel_lib(config)
    for spec in f16_specs:
        fn = "gelu_poly_f16" if spec.compute_dtype == "float16" else "gelu_poly_f16_c32"
        got = run(lib, fn, ALL_F16, np.uint16, *poly_args(spec))
        want = bits(spec.evaluate(ALL_F16.view(np.float16)))
        bad = np.nonzero(got != want)[0]
        assert bad.size == 0, (spec.summary(), [hex(int(ALL_F16[i])) for i in bad[:5]])
    # every length around the 32-lane blocks, from odd addresses
    spec = f16_specs[1]
    x = np.random.default_rng(4).permutation(ALL_F16)[:200].copy()
    for n in range(0, 100):
        got = run(lib, "gelu_poly_f16", x[1 : n + 1], np.uint16, *poly_args(spec))
        assert np.array_equal(got, bits(spec.evaluate(x[1 : n + 1].view(np.float16)))), n
    lib.gelu_poly_f16_simd.restype = ctypes.c_char_p
    simd = "avx512fp16" if config in ("avx512", "gnu-native-fma") else "scalar"
    if config == "gnu-native-fma" and "avx512_fp16" not in CPU:
        simd = "scalar"
    assert lib.gelu_poly_f16_simd().decode() == simd


@pytest.mark.parametrize("config", ["default", "portable", "avx512"])
def test_float16_conversions(kernel_lib: Callable[[str], ctypes.CDLL], config: str) -> None:
    """binary16 -> binary32 on every pattern; binary32 -> binary16 on a dense sample."""
    lib = kernel_lib(config)
    lib.gelu_f16_to_f32.restype = ctypes.c_float
    lib.gelu_f16_to_f32.argtypes = [ctypes.c_uint16]
    lib.gelu_f32_to_f16.restype = ctypes.c_uint16
    lib.gelu_f32_to_f16.argtypes = [ctypes.c_float]
    h = ALL_F16.view(np.float16)
    finite = ~np.isnan(h)
    up = np.array([lib.gelu_f16_to_f32(int(v)) for v in ALL_F16], np.float32)
    assert np.array_equal(bits(up[finite]), bits(h[finite].astype(np.float32)))
    assert np.isnan(up[~finite]).all()
    rng = np.random.default_rng(9)
    vals = np.unique(h[np.isfinite(h)].astype(np.float64))
    sample = np.concatenate(
        [
            rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            rng.uniform(-70000, 70000, 5000).astype(np.float32),
            rng.uniform(-2e-4, 2e-4, 5000).astype(np.float32),  # float16 subnormals
            # halfway cases: the midpoints between neighbouring float16 values
            (vals[:-1] + np.diff(vals) / 2).astype(np.float32)[::5],
        ]
    )
    sample = sample[~np.isnan(sample)]
    down = np.array([lib.gelu_f32_to_f16(float(v)) for v in sample], np.uint16)
    with np.errstate(over="ignore"):
        assert np.array_equal(down, bits(sample.astype(np.float16)))


# -- float32 polynomials ------------------------------------------------------------------------
def f32_sample(spec: PolySpec, n: int = 1_000_000) -> npt.NDArray[np.float32]:
    """Dense seeded sample: uniform over the domain and past it, every value near 0, the
    breakpoints, the origins and the domain's ends, the tails, subnormals, infs and NaNs."""
    rng = np.random.default_rng(2024)
    lo, hi = spec.lo, spec.hi
    near = []
    for v in (*spec.breakpoints, *spec.origins, 0.0):
        c = np.float32(v)
        steps = np.arange(-40, 41)
        near.append(
            (c.view(np.int32) + steps).view(np.float32) if c != 0 else np.zeros(0, np.float32)
        )
        neg = np.float32(-abs(c)) if c != 0 else np.float32(-0.0)
        near.append((neg.view(np.int32) + np.arange(0, 41)).view(np.float32))
    tiny = np.arange(0, 4000, dtype=np.int32).view(np.float32)  # +0 and subnormals
    specials = np.array(
        [np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38, 1e-30, -1e-30], np.float32
    )
    snan = np.array([0x7F800001, 0xFF800123, 0x7FC00001], np.uint32).view(np.float32)
    parts = [
        rng.uniform(lo, hi, n).astype(np.float32),
        rng.uniform(lo - 2.0, hi + 2.0, n // 10).astype(np.float32),
        np.exp(rng.uniform(-100, 4, n // 10)).astype(np.float32)
        * rng.choice([-1, 1], n // 10).astype(np.float32),
        tiny,
        -tiny,
        specials,
        snan,
        *near,
    ]
    return np.concatenate(parts).astype(np.float32)


def random_f32_poly(segments: int, degree: int, seed: int) -> PolySpec:
    """Arbitrary coefficients (no fit): the kernel must follow the spec's arithmetic anyway."""
    rng = np.random.default_rng(seed)
    bp = np.unique(np.concatenate([[0.0], rng.uniform(-20, 20, segments - 2), [-20.0, 20.0]]))
    bp = np.unique(bp.astype(np.float32)).astype(np.float64)
    k = bp.size - 1
    return PolySpec(
        form="exact",
        lo=float(bp[0]),
        hi=float(bp[-1]),
        breakpoints=tuple(bp),
        origins=tuple(float(v) for v in rng.uniform(-3, 3, k).astype(np.float32)),
        coefficients=rng.uniform(-2, 2, (k, degree + 1)).astype(np.float32),
        io_dtype="float32",
        compute_dtype="float32",
    )


def f32_poly_on(bp: npt.ArrayLike, degree: int, seed: int) -> PolySpec:
    """Arbitrary origins and coefficients on given (float32, ascending) breakpoints; the inner
    one nearest 0 moves to 0 (a range across 0 must break there)."""
    b = np.asarray(bp, np.float32).astype(np.float64)
    if b[0] < 0 < b[-1] and 0 not in b:
        b[1 + np.argmin(np.abs(b[1:-1]))] = 0.0
    rng = np.random.default_rng(seed)
    k = b.size - 1
    return PolySpec(
        form="exact",
        lo=float(b[0]),
        hi=float(b[-1]),
        breakpoints=tuple(b),
        origins=tuple(float(v) for v in rng.uniform(-3, 3, k).astype(np.float32)),
        coefficients=rng.uniform(-1, 1, (k, degree + 1)).astype(np.float32),
        io_dtype="float32",
        compute_dtype="float32",
    )


def _one_ulp_pair(lo: float, hi: float, k: int) -> npt.NDArray[np.float32]:
    """k uniform segments plus a breakpoint one ulp above an inner one (one grid cell)."""
    b = np.linspace(lo, hi, k + 1).astype(np.float32)
    return np.sort(np.append(b, np.nextafter(b[k // 3], np.float32(np.inf))))


def _jittered(lo: float, hi: float, k: int, seed: int) -> npt.NDArray[np.float64]:
    """k segments, inner breakpoints moved by up to a third of the spacing."""
    b = np.linspace(lo, hi, k + 1)
    b[1:-1] += np.random.default_rng(seed).uniform(-1, 1, k - 1) * (hi - lo) / k / 3
    return b


@pytest.fixture(scope="session")
def f32_specs() -> list[PolySpec]:
    return [
        # the portable loop's grid index (K >= 9, n >= 1024): breakpoints on its cell
        # boundaries ((b - lo) * 256 / 16 an integer), a cell with two breakpoints (the
        # counting fallback), the default fp32-poly shapes (36 x 8, 44 x 8) with one
        # breakpoint per cell and with up to three, K = 64 (the largest it takes) and 65 (one
        # value at a time)
        f32_poly_on(np.linspace(-8, 8, 33), 8, 11),
        f32_poly_on(_one_ulp_pair(-6.0, 6.0, 20), 3, 12),
        f32_poly_on(_jittered(-14.36, 5.35, 36, 13), 8, 13),
        f32_poly_on(_jittered(-63.5, 9.9, 44, 14), 8, 14),
        f32_poly_on(np.sort(np.random.default_rng(13).uniform(-14.36, 5.35, 37)), 8, 13),
        f32_poly_on(np.sort(np.random.default_rng(15).uniform(-20, 20, 65)), 2, 15),
        f32_poly_on(np.linspace(-20, 20, 66), 1, 16),
        # K = 64, D = 8 on the grid (the AVX2 path's transposed rows, ten entries per row)
        f32_poly_on(_jittered(-20.0, 20.0, 64, 17), 8, 17),
        # 16 < K <= 32 (two-table permutes) and K > 32 (four tables) in the AVX-512 build; the
        # AVX2 build takes K <= 8 and K <= 16 by permutes, 16 < K <= 64 by transposed rows
        random_f32_poly(24, 4, 1),
        random_f32_poly(40, 2, 2),
        random_f32_poly(3, 4, 3),
        build_poly(-9, 4.5, 8, 4, io_dtype="float32", compute_dtype="float32"),
        build_poly(-8, 8, 10, 3, io_dtype="float32", compute_dtype="float32"),
        build_poly(-6, 6, 6, 3, io_dtype="float32", compute_dtype="float32", form="tanh"),
        build_poly(0.5, 5, 3, 2, io_dtype="float32", compute_dtype="float32"),
    ]


@pytest.mark.parametrize(
    "config", ["default", "avx2", "avx512", "gnu-native-fma", "portable-native-fma"]
)
def test_poly_f32_dense_sample(
    kernel_lib: Callable[[str], ctypes.CDLL], f32_specs: list[PolySpec], config: str
) -> None:
    lib = kernel_lib(config)
    for spec in f32_specs:
        x = f32_sample(spec, 1_000_000 if spec is f32_specs[0] else 200_000)
        got = run(lib, "gelu_poly_f32", x, np.float32, *poly_args(spec))
        want = spec.evaluate(x)
        bad = np.nonzero(bits(got) != bits(want))[0]
        assert bad.size == 0, (spec.summary(), x[bad[:5]], got[bad[:5]], want[bad[:5]])
    # every length around the 16-lane blocks, from odd addresses
    spec = f32_specs[0]
    x = f32_sample(spec, 1000)[::-1].copy()
    for n in range(0, 50):
        got = run(lib, "gelu_poly_f32", x[1 : n + 1], np.float32, *poly_args(spec))
        assert np.array_equal(bits(got), bits(spec.evaluate(x[1 : n + 1]))), n
    lib.gelu_poly_f32_simd.restype = ctypes.c_char_p
    # -march=native takes the widest path this CPU has (AVX-512F, else AVX2)
    native = "avx512f" if "avx512f" in CPU else "avx2" if "avx2" in CPU else "scalar"
    path = {
        "default": "scalar",
        "portable-native-fma": "scalar",
        "avx2": "avx2",
        "avx512": "avx512f",
    }.get(config, native)
    assert lib.gelu_poly_f32_simd().decode() == path


# -- the generated per-spec files ---------------------------------------------------------------
def _run_generated(
    tmp_path: Path, spec: GeluApprox, name: str, x: npt.NDArray[Any], out_dtype: Any
) -> npt.NDArray[Any]:
    files = kernel_files(spec, name)
    tmp_path.mkdir()
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "drv.c").write_text(
        f'#include "{name}_kernel.h"\n'
        "void run(const void *in, void *out, size_t n);\n"
        f"void run(const void *in, void *out, size_t n) {{ {name}_gelu(in, out, n); }}\n"
    )
    lib = build_library(
        tmp_path / "lib",
        cflags=["-Werror", "-I", str(tmp_path)],
        extra_sources=[tmp_path / "drv.c"],
        name=name,
        kinds=[kernel_call(spec).kind],
    )
    return run(ctypes.CDLL(str(lib)), "run", x, out_dtype)


def test_generated_files_run_each_kind(tmp_path: Path) -> None:
    lut = build_lut(in_range=(-9.0, 4.5), form="tanh")
    u8f16 = build_lut(in_range=(-5.0, 5.0), in_dtype="uint8", out_dtype="float16")
    interp = build_interp_lut(segments=32, in_range=(-9.0, 4.5))
    p16 = build_poly(-8, 8, 8, 3)
    p16c32 = build_poly(-8, 8, 8, 3, compute_dtype="float32")
    p32 = build_poly(-8, 8, 8, 4, io_dtype="float32", compute_dtype="float32")
    x32 = np.random.default_rng(1).uniform(-10, 10, 50_000).astype(np.float32)
    cases: list[tuple[GeluApprox, npt.NDArray[Any], Any, Callable[[], npt.NDArray[Any]]]] = [
        (lut, lut.in_qparams.codes(), np.int8, lambda: lut.lookup(lut.in_qparams.codes())),
        (
            u8f16,
            u8f16.in_qparams.codes(),
            np.uint16,
            lambda: bits(u8f16.lookup(u8f16.in_qparams.codes())),
        ),
        (
            interp,
            interp.in_qparams.codes(),
            np.int8,
            lambda: interp.lookup(interp.in_qparams.codes()),
        ),
        (p16, ALL_F16, np.uint16, lambda: bits(p16.evaluate(ALL_F16.view(np.float16)))),
        (p16c32, ALL_F16, np.uint16, lambda: bits(p16c32.evaluate(ALL_F16.view(np.float16)))),
        (p32, x32, np.float32, lambda: p32.evaluate(x32)),
    ]
    for i, (spec, x, out_dtype, want) in enumerate(cases):
        name = f"site{i}"
        files = kernel_files(spec, name)
        assert set(files) == {f"{name}.h", f"{name}_kernel.h", *KERNELS[kernel_call(spec).kind]}
        got = _run_generated(tmp_path / name, spec, name, x, out_dtype)
        assert np.array_equal(bits(got), bits(want())), spec.summary()


def test_unsupported_specs_and_files_are_refused() -> None:
    with pytest.raises(BadInputError, match="no C kernel for a 'tanh-formula' spec"):
        kernel_call(TanhGeluSpec(-3.0, 3.0))
    with pytest.raises(BadInputError, match="no kernel file"):
        kernel_source("gelu_nope.c")
    assert "gelu_lut_s8_s8" in kernel_source("gelu_lut.h")


def test_approx_cli_exports_a_c_kernel_folder_that_compiles(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gelu_quant.cli.main import main

    out = tmp_path / "k"
    args = ["approx", "lut", "--range", "-9", "4.5", "--name", "ffn0"]
    r = CliRunner().invoke(main, [*args, "--export", "c-kernel", str(out)])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert names == {"ffn0.h", "ffn0_kernel.h", "gelu_lut.h", "gelu_lut.c"}
    spec = build_lut(in_range=(-9.0, 4.5))
    got = _run_generated(tmp_path / "build", spec, "ffn0", spec.in_qparams.codes(), np.int8)
    assert np.array_equal(got, spec.lookup(spec.in_qparams.codes()))
    # refusals: a baseline has no kernel; a file is not a folder; a missing parent
    r = CliRunner().invoke(
        main,
        ["approx", "baseline", "tanh", "--range", "-3", "3", "--export", "c-kernel", str(out)],
    )
    assert r.exit_code == 2 and "no C kernel" in r.output
    r = CliRunner().invoke(main, [*args, "--export", "c-kernel", str(out / "ffn0.h")])
    assert r.exit_code == 2 and "is a file" in r.output
    r = CliRunner().invoke(main, [*args, "--export", "c-kernel", str(tmp_path / "a" / "b")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(main, [*args, "--export", "json", str(out)])
    assert r.exit_code == 2 and "is a folder" in r.output


@pytest.mark.parametrize("config", ["default", "avx2", "avx512"])
def test_kernels_run_clean_under_address_and_ub_sanitizers(tmp_path: Path, config: str) -> None:
    flags, needs, x86_only = CONFIGS[config]
    if (x86_only and not X86) or not needs <= CPU:
        pytest.skip(f"{config} cannot run here")
    for kind in KERNELS.values():
        for f in kind:
            (tmp_path / f).write_text(kernel_source(f))
    driver = Path(__file__).parent / "fixtures" / "ckernels_sanitize.c"
    exe = tmp_path / "sanitize"
    cmd = [
        str(find_c_compiler()),
        "-std=c99",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        *flags,
        "-I",
        str(tmp_path),
        "-o",
        str(exe),
        str(driver),
        *(str(tmp_path / s) for _, s in KERNELS.values()),
        "-lm",
    ]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"no sanitizer runtime: {built.stderr.strip()[:200]}")
    assert built.returncode == 0, built.stderr
    done = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "asan ok" in done.stdout, done.stderr[-2000:]


def test_generated_files_of_low_bit_tables(tmp_path: Path) -> None:
    """Low-bit codes (2**bits entries in an 8-bit container): the generated kernel gives the
    spec's codes on every low-bit code, and on the container's other codes the entry of the
    code clipped into range (the model's Clip), never a read past the spec's table."""
    cases = [
        build_lut(in_range=(-3.0, 3.0), in_bits=4, out_bits=4),
        build_lut(in_range=(-6.0, 9.0), in_dtype="uint8", out_dtype="uint8", in_bits=3),
        build_lut(in_range=(-4.0, 4.0), in_bits=2, out_dtype="float16"),
        build_lut(in_range=(-4.0, 4.0), in_dtype="uint8", in_bits=7, out_dtype="float32"),
    ]
    for i, spec in enumerate(cases):
        qp = spec.in_qparams
        assert qp.code_bits is not None and spec.table.size == 2**qp.code_bits
        container = np.arange(256).astype(np.uint8).view(qp.np_dtype)
        out = {"float16": np.uint16, "float32": np.float32}.get(spec.out_dtype, spec.table.dtype)
        got = _run_generated(tmp_path / f"low{i}", spec, f"low{i}", container, out)
        inside = (container >= qp.qmin) & (container <= qp.qmax)
        want = spec.lookup(np.clip(container, qp.qmin, qp.qmax).astype(qp.np_dtype))
        assert np.array_equal(bits(got[inside]), bits(spec.lookup(container[inside])))
        assert np.array_equal(bits(got), bits(want)), spec.summary()
