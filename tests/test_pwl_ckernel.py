"""The PWL C kernel (``gelu_pwl.c``), compiled with -Wall -Wextra -Werror, bit for bit against
the numpy spec and the integer arithmetic written out in the test, on every input code; the
generated per-spec files and ``approx lut --pwl --export c-kernel``."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from _pwl_oracle import pwl_codes
from click.testing import CliRunner

from gelu_quant.lut.ckernels import (
    build_library,
    find_c_compiler,
    kernel_call,
    kernel_files,
    kernel_source,
)
from gelu_quant.lut.pwl import PWL_SIZES, PwlLutSpec, build_pwl_lut

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler (gcc/clang/$CC)")

SFX = {"int8": "s8", "uint8": "u8", "int16": "s16"}
FLAGS = {
    "default": [],
    # GNU mode, native target, contraction allowed: integer code must not care
    "gnu-native": ["-std=gnu99", "-march=native", "-O3"],
}


@pytest.fixture(scope="module")
def pwl_lib(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ctypes.CDLL]:
    cache: dict[str, ctypes.CDLL] = {}

    def get(config: str) -> ctypes.CDLL:
        if config not in cache:
            d = tmp_path_factory.mktemp(f"pwl-{config}")
            lib = build_library(d, cflags=["-Werror", *FLAGS[config]], kinds=["pwl"], name="pwl")
            cache[config] = ctypes.CDLL(str(lib))
        return cache[config]

    return get


def _ptr(a: npt.NDArray[Any]) -> ctypes.c_void_p:
    assert a.flags.c_contiguous
    return ctypes.c_void_p(a.ctypes.data)


def run_kernel(
    lib: ctypes.CDLL,
    in_dt: str,
    out_dt: str,
    x: npt.NDArray[Any],
    starts: npt.NDArray[np.int32],
    bases: npt.NDArray[np.int32],
    slopes: npt.NDArray[np.int32],
    shift: int,
) -> npt.NDArray[Any]:
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=out_dt)
    f = getattr(lib, f"gelu_pwl_{SFX[in_dt]}_{SFX[out_dt]}")
    f.restype = None
    arrs = [np.ascontiguousarray(a, dtype=np.int32) for a in (starts, bases, slopes)]
    f(
        _ptr(x),
        _ptr(out),
        ctypes.c_size_t(x.size),
        *map(_ptr, arrs),
        ctypes.c_uint(starts.size),
        ctypes.c_uint(shift),
    )
    return out


def run_spec(lib: ctypes.CDLL, spec: PwlLutSpec, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return run_kernel(
        lib,
        spec.in_qparams.dtype,
        spec.out_qparams.dtype,
        x,
        spec.starts,
        spec.bases,
        spec.slopes,
        spec.shift,
    )


@functools.cache
def int8_specs() -> list[PwlLutSpec]:
    """Every segment count and form over a MiniLM-wide and a narrow range."""
    return [
        build_pwl_lut(segments=n, in_range=rng, form=form)  # type: ignore[arg-type]
        for n in PWL_SIZES
        for form in ("exact", "tanh", "quick")
        for rng in ((-17.0, 25.0), (-3.0, 3.0))
    ]


@pytest.mark.parametrize("config", list(FLAGS))
def test_int8_every_code(pwl_lib: Callable[[str], ctypes.CDLL], config: str) -> None:
    lib = pwl_lib(config)
    for spec in int8_specs():
        codes = spec.in_qparams.codes()
        got = run_spec(lib, spec, codes)
        assert np.array_equal(got, spec.lookup(codes)), spec.summary()
        want = pwl_codes(spec.payload(), codes.astype(int).tolist())
        assert got.astype(int).tolist() == want, spec.summary()


@pytest.mark.parametrize(
    ("in_dt", "out_dt", "rng", "form"),
    [
        ("uint8", "uint8", (-4.3, 9.8), "quick"),
        ("uint8", "int8", (-6.0, 6.0), "exact"),
        ("int8", "uint8", (-9.0, 4.5), "tanh"),
        ("int8", "int16", (-9.0, 4.5), "exact"),
        ("uint8", "int16", (-0.8, 14.0), "tanh"),
        ("int16", "int8", (-10.0, 12.0), "exact"),
        ("int16", "uint8", (-5.0, 7.0), "quick"),
        ("int16", "int16", (-10.0, 12.0), "tanh"),
    ],
)
def test_other_dtypes_every_code(
    pwl_lib: Callable[[str], ctypes.CDLL],
    in_dt: str,
    out_dt: str,
    rng: tuple[float, float],
    form: str,
) -> None:
    spec = build_pwl_lut(segments=32, in_range=rng, in_dtype=in_dt, out_dtype=out_dt, form=form)  # type: ignore[arg-type]
    codes = spec.in_qparams.codes()
    got = run_spec(pwl_lib("default"), spec, codes)
    assert np.array_equal(got, spec.lookup(codes))
    if in_dt != "int16":
        assert got.astype(int).tolist() == pwl_codes(spec.payload(), codes.astype(int).tolist())


def test_arbitrary_arrays_wrap_like_int32(pwl_lib: Callable[[str], ctypes.CDLL]) -> None:
    """Any segment arrays (beyond a spec's int32 bounds too) give numpy int32 arithmetic."""
    lib = pwl_lib("default")
    rng = np.random.default_rng(8)
    codes = np.arange(-128, 128).astype(np.int8)
    for segments in (1, 2, 3, 7, 16, 17, 64, 100):
        for scale in (1000, 2**20, 2**31 - 1):
            starts = np.sort(rng.choice(np.arange(-127, 128), segments - 1, replace=False))
            starts = np.concatenate([[-128], starts]).astype(np.int32)
            bases = rng.integers(-scale, scale, segments, endpoint=True).astype(np.int32)
            slopes = rng.integers(-scale, scale, segments, endpoint=True).astype(np.int32)
            shift = int(rng.integers(0, 25))
            # the oracle: the stated arithmetic with numpy's wrapping int32
            k = np.array([np.max(np.nonzero(starts <= q)[0]) for q in codes.astype(int)])
            with np.errstate(over="ignore"):
                d = codes.astype(np.int32) - starts[k]
                acc = bases[k] + d * slopes[k]
            want = np.clip(acc >> np.int32(shift), -128, 127).astype(np.int8)
            got = run_kernel(lib, "int8", "int8", codes, starts, bases, slopes, shift)
            assert np.array_equal(got, want), (segments, scale, shift)


def _run_generated(tmp: Path, files: dict[str, str], name: str, x: npt.NDArray[Any], out_dt: str):
    tmp.mkdir()
    for fname, text in files.items():
        (tmp / fname).write_text(text)
    (tmp / "drv.c").write_text(
        f'#include "{name}_kernel.h"\n'
        "void run(const void *in, void *out, size_t n);\n"
        f"void run(const void *in, void *out, size_t n) {{ {name}_gelu(in, out, n); }}\n"
    )
    lib = build_library(
        tmp / "lib",
        cflags=["-Werror", "-I", str(tmp)],
        extra_sources=[tmp / "drv.c"],
        name=name,
        kinds=["pwl"],
    )
    out = np.empty(x.shape, dtype=out_dt)
    f = ctypes.CDLL(str(lib)).run
    f.restype = None
    f(_ptr(x), _ptr(out), ctypes.c_size_t(x.size))
    return out


def test_generated_files_and_cli_export(tmp_path: Path) -> None:
    from gelu_quant.cli.main import main

    spec = build_pwl_lut(segments=16, in_range=(-4.3, 9.8), form="tanh")
    files = kernel_files(spec, "ffn0")
    assert set(files) == {"ffn0.h", "ffn0_kernel.h", "gelu_pwl.h", "gelu_pwl.c"}
    assert kernel_call(spec).function == "gelu_pwl_s8_s8"
    assert "static const int32_t ffn0_starts[16]" in files["ffn0.h"]
    assert "#define FFN0_SHIFT 16" in files["ffn0.h"]
    codes = spec.in_qparams.codes()
    got = _run_generated(tmp_path / "gen", files, "ffn0", codes, "int8")
    assert np.array_equal(got, spec.lookup(codes))
    # the CLI writes the same files for the same spec
    out = tmp_path / "k"
    args = ["approx", "lut", "--range", "-4.3", "9.8", "--form", "tanh", "--pwl", "16"]
    r = CliRunner().invoke(main, [*args, "--name", "ffn0", "--export", "c-kernel", str(out)])
    assert r.exit_code == 0, r.output
    assert "0 vs the full table" in r.output
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    assert kernel_source("gelu_pwl.h").count("GELU_PWL_DECL(gelu_pwl_") == 9
    r = CliRunner().invoke(main, [*args, "--interp", "16"])
    assert r.exit_code == 2 and "give one" in r.output
    r = CliRunner().invoke(main, [*args, "--out", "fp16"])
    assert r.exit_code == 2 and "integer outputs" in r.output
