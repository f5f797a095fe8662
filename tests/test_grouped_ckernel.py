"""The grouped-table C kernel (``gelu_lut_grouped.c``), compiled with -Wall -Wextra -Werror, bit for
bit on every code of every channel against the numpy spec (``GroupedLutSpec.lookup``) and
against each group's own table indexed in the test (``groups[g].table[q - qmin]``); the
generated per-spec files (``NAME_gelu(in, out, n)`` over [rows, channels]).

Inputs: 2^bits rows x C channels where channel ``c`` of row ``r`` holds code
``qmin + (r + 37 c) mod 2^bits``: every channel sees every code, and neighbouring channels see
different codes in the same row, so a channel or row mix-up shows."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gelu_quant.errors import BadInputError
from gelu_quant.lut.ckernels import build_library, find_c_compiler, kernel_call, kernel_files
from gelu_quant.lut.grouped import GroupedLutSpec, build_grouped_lut
from gelu_quant.lut.table import build_lut

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler (gcc/clang/$CC)")

SFX = {"int8": "s8", "uint8": "u8", "int16": "s16", "float16": "f16", "float32": "f32"}
FLAGS = {
    "default": [],
    # GNU mode, native target, -O3 (the vectoriser may gather): integer indexing must not care
    "gnu-native": ["-std=gnu99", "-march=native", "-O3"],
}


@pytest.fixture(scope="module")
def glib(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ctypes.CDLL]:
    cache: dict[str, ctypes.CDLL] = {}

    def get(config: str) -> ctypes.CDLL:
        if config not in cache:
            d = tmp_path_factory.mktemp(f"grouped-{config}")
            lib = build_library(
                d, cflags=["-Werror", *FLAGS[config]], kinds=["lut_grouped"], name="grouped"
            )
            cache[config] = ctypes.CDLL(str(lib))
        return cache[config]

    return get


def _ptr(a: npt.NDArray[Any]) -> ctypes.c_void_p:
    assert a.flags.c_contiguous
    return ctypes.c_void_p(a.ctypes.data)


def bits(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Raw bit patterns (float outputs compared bit for bit)."""
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def every_code(spec: GroupedLutSpec) -> npt.NDArray[Any]:
    qp = spec.groups[0].in_qparams
    n = qp.qmax - qp.qmin + 1
    r = np.arange(n)[:, None]
    c = np.arange(spec.channels)[None, :]
    return ((r + 37 * c) % n + qp.qmin).astype(qp.np_dtype)


def run_spec(
    lib: ctypes.CDLL,
    spec: GroupedLutSpec,
    x: npt.NDArray[Any],
    out: npt.NDArray[Any] | None = None,
    n: int | None = None,
) -> npt.NDArray[Any]:
    """``gelu_lut_grouped_*(x, out, n, channels, channel_group, tables)``."""
    g0 = spec.groups[0]
    a = spec.arrays()
    tables = np.ascontiguousarray(a["tables"])
    if tables.dtype == np.float16:
        tables = tables.view(np.uint16)
    cg = np.ascontiguousarray(a["channel_group"])
    assert cg.dtype == np.uint8
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(x.shape, dtype=tables.dtype)
    f = getattr(lib, f"gelu_lut_grouped_{SFX[g0.in_qparams.dtype]}_{SFX[g0.out_dtype]}")
    f.restype = None
    f(
        _ptr(x),
        _ptr(out),
        ctypes.c_size_t(x.size if n is None else n),
        ctypes.c_size_t(spec.channels),
        _ptr(cg),
        _ptr(tables),
    )
    return out


def by_hand(spec: GroupedLutSpec, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The oracle written out: value (r, c) is group channel_group[c]'s entry q - qmin."""
    qmin = spec.groups[0].in_qparams.qmin
    want = np.empty(x.shape, dtype=spec.groups[0].table.dtype)
    for c in range(spec.channels):
        want[:, c] = spec.groups[int(spec.channel_group[c])].table[x[:, c].astype(int) - qmin]
    return want


def random_map(channels: int, k: int, seed: int) -> npt.NDArray[np.int64]:
    """Every group used, in a scattered order (as partition_channels leaves them)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(channels) % k).astype(np.int64)


def ranges(k: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(-float(rng.uniform(0.5, 17.0)), float(rng.uniform(0.5, 25.0))) for _ in range(k)]


@pytest.mark.parametrize("config", list(FLAGS))
@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
@pytest.mark.parametrize("in_dtype", ["int8", "uint8"])
@pytest.mark.parametrize(("k", "channels"), [(1, 5), (3, 37), (8, 96), (64, 200)])
def test_every_code_of_every_channel(
    glib: Callable[[str], ctypes.CDLL],
    config: str,
    form: str,
    in_dtype: str,
    k: int,
    channels: int,
) -> None:
    lib = glib(config)
    for j, out_dtype in enumerate(["int8", "uint8", "int16", "float16", "float32"]):
        spec = build_grouped_lut(
            random_map(channels, k, k + j),
            ranges(k, 100 * k + j),
            in_dtype=in_dtype,  # type: ignore[arg-type]
            out_dtype=out_dtype,  # type: ignore[arg-type]
            form=form,  # type: ignore[arg-type]
        )
        x = every_code(spec)
        got = run_spec(lib, spec, x)
        assert np.array_equal(bits(got), bits(spec.lookup(x))), spec.summary()
        assert np.array_equal(bits(got), bits(by_hand(spec, x))), spec.summary()


@pytest.mark.parametrize("out_dtype", ["int8", "uint8", "int16", "float16", "float32"])
def test_int16_codes(glib: Callable[[str], ctypes.CDLL], out_dtype: str) -> None:
    spec = build_grouped_lut(
        np.array([1, 0, 2, 1]),
        [(-2.0, 3.0), (-10.0, 12.0), (-17.0, 25.0)],
        in_dtype="int16",
        out_dtype=out_dtype,  # type: ignore[arg-type]
    )
    x = every_code(spec)
    assert x.shape == (65536, 4)
    got = run_spec(glib("default"), spec, x)
    assert np.array_equal(bits(got), bits(spec.lookup(x)))
    assert np.array_equal(bits(got), bits(by_hand(spec, x)))


def test_partial_rows_in_place_and_zero_channels(glib: Callable[[str], ctypes.CDLL]) -> None:
    lib = glib("default")
    spec = build_grouped_lut(random_map(7, 3, 1), ranges(3, 2))
    x = every_code(spec)
    flat = x.ravel()
    for n in (0, 1, 6, 7, 8, 13, 100, flat.size - 1):
        out = np.full(flat.size, 99, np.int8)
        run_spec(lib, spec, flat, out, n)
        want = spec.lookup(x).ravel()
        assert np.array_equal(out[:n], want[:n]), n  # channel of value i is i % 7
        assert np.all(out[n:] == 99), n  # nothing past n
    y = flat.copy()
    run_spec(lib, spec, y, y)  # in place
    assert np.array_equal(y, spec.lookup(x).ravel())
    out = np.full(flat.size, 99, np.int8)
    f = lib.gelu_lut_grouped_s8_s8
    f(_ptr(flat), _ptr(out), ctypes.c_size_t(flat.size), ctypes.c_size_t(0), None, None)
    assert np.all(out == 99)


def _run_generated(tmp: Path, spec: GroupedLutSpec, name: str, x: npt.NDArray[Any]) -> Any:
    files = kernel_files(spec, name)
    kernel = {"gelu_lut_grouped.h", "gelu_lut_grouped.c"}
    assert set(files) == {f"{name}.h", f"{name}_kernel.h", *kernel}
    tmp.mkdir()
    for fname, text in files.items():
        (tmp / fname).write_text(text)
    (tmp / "drv.c").write_text(
        f'#include "{name}_kernel.h"\n'
        "void run(const void *in, void *out, size_t n);\n"
        f"void run(const void *in, void *out, size_t n) {{ {name}_gelu(in, out, n); }}\n"
        "size_t channels(void);\n"
        f"size_t channels(void) {{ return {name.upper()}_CHANNELS; }}\n"
    )
    lib = ctypes.CDLL(
        str(
            build_library(
                tmp / "lib",
                cflags=["-Werror", "-I", str(tmp)],
                extra_sources=[tmp / "drv.c"],
                name=name,
                kinds=["lut_grouped"],
            )
        )
    )
    lib.channels.restype = ctypes.c_size_t
    assert lib.channels() == spec.channels
    out = np.empty(x.shape, dtype=spec.groups[0].table.dtype)
    lib.run.restype = None
    lib.run(_ptr(np.ascontiguousarray(x)), _ptr(out), ctypes.c_size_t(x.size))
    return out


def test_generated_files(tmp_path: Path) -> None:
    spec = build_grouped_lut(random_map(48, 4, 3), ranges(4, 4), form="tanh")
    assert kernel_call(spec, "ffn0").function == "gelu_lut_grouped_s8_s8"
    x = every_code(spec)
    assert np.array_equal(_run_generated(tmp_path / "a", spec, "ffn0", x), spec.lookup(x))
    f16 = build_grouped_lut(
        random_map(9, 2, 5), ranges(2, 6), in_dtype="uint8", out_dtype="float16"
    )
    x = every_code(f16)
    got = _run_generated(tmp_path / "b", f16, "blk_1", x)
    assert np.array_equal(bits(got), bits(f16.lookup(x)))


@pytest.mark.parametrize(("in_dtype", "bits", "out_bits"), [("int8", 6, 8), ("uint8", 4, 4)])
def test_low_bit_groups_run_on_every_container_code(
    tmp_path: Path, in_dtype: str, bits: int, out_bits: int
) -> None:
    """Grouped low-bit tables (convert --target int6-lut-int8out --groups K): the generated
    kernel, fed every code of the 8-bit container in every channel, gives what the model
    computes -- the Clip to the low-bit range, then the group's entry (oracle by hand)."""
    rng = np.random.default_rng(11)
    groups = tuple(
        build_lut(
            in_range=(-float(rng.uniform(0.5, 5.0)), float(rng.uniform(0.5, 12.0))),
            in_dtype=in_dtype,  # type: ignore[arg-type]
            out_dtype=in_dtype,  # type: ignore[arg-type]
            in_bits=bits,
            out_bits=out_bits,
        )
        for _ in range(3)
    )
    spec = GroupedLutSpec(groups=groups, channel_group=random_map(10, 3, 12))
    assert kernel_call(spec, "small").args[-1] == "&small_tables_8bit[0][0]"
    cmin = -128 if in_dtype == "int8" else 0
    x = np.repeat(np.arange(cmin, cmin + 256)[:, None], spec.channels, 1)
    x = x.astype(groups[0].in_qparams.np_dtype)
    qp = groups[0].in_qparams
    want = np.empty(x.shape, dtype=groups[0].table.dtype)
    for c in range(spec.channels):
        t = groups[int(spec.channel_group[c])].table
        want[:, c] = t[np.clip(x[:, c].astype(int), qp.qmin, qp.qmax) - qp.qmin]
    got = _run_generated(tmp_path / "a", spec, "small", x)
    assert np.array_equal(got, want)
    # on the low-bit codes themselves that is the spec's own lookup
    inside = (x[:, 0].astype(int) >= qp.qmin) & (x[:, 0].astype(int) <= qp.qmax)
    assert np.array_equal(got[inside], spec.lookup(x[inside]))


def test_groups_of_different_widths_are_refused() -> None:
    g4 = build_lut(in_range=(-3.0, 3.0), in_bits=4)
    g8 = build_lut(in_range=(-3.0, 3.0))
    spec = GroupedLutSpec(groups=(g4, g8), channel_group=np.array([0, 1]))
    with pytest.raises(BadInputError, match="different input code widths"):
        kernel_call(spec)
