"""Reference C kernels that run a spec's arrays, and the files that bind them to one spec.

The kernels are portable C99 sources shipped in the package (``gelu_quant/lut/kernels``): one
header and one source per kind, generic over the arrays, which they take as arguments:

========================  ===========================================================
``gelu_lut.h/.c``         full tables (:class:`~gelu_quant.lut.table.LutSpec`), with a
                          compile-time SIMD path for 8-bit -> 8-bit tables
``gelu_lut_grouped.h/.c`` grouped tables (:class:`~gelu_quant.lut.grouped.GroupedLutSpec`):
                          one table per channel group of the last axis
``gelu_interp.h/.c``      interpolated tables (:class:`~gelu_quant.lut.interp.InterpLutSpec`)
``gelu_pwl.h/.c``         non-uniform piecewise-linear tables
                          (:class:`~gelu_quant.lut.pwl.PwlLutSpec`)
``gelu_poly_f16.h/.c``    float16 polynomials (:class:`~gelu_quant.lut.poly.PolySpec`,
                          float16 io, float16 or float32 arithmetic)
``gelu_poly_f32.h/.c``    float32 polynomials (float32 io and arithmetic)
========================  ===========================================================

:func:`kernel_files` returns, for one spec, the spec's array header (``NAME.h``, as
:func:`~gelu_quant.lut.export.c_header` writes it), a binding header ``NAME_kernel.h`` that
defines ``NAME_gelu(in, out, n)`` for exactly this spec, and the kernel sources it needs.
For a grouped table, ``n`` counts values laid out [rows, channels] (channel = last axis,
value ``i`` in channel ``i % NAME_CHANNELS``); ``NAME_kernel.h`` defines ``NAME_CHANNELS``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant import __version__
from gelu_quant.errors import BadInputError
from gelu_quant.lut.export import _c_ident, _c_values, c_header
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.interp import InterpLutSpec
from gelu_quant.lut.poly import PolySpec
from gelu_quant.lut.pwl import PwlLutSpec
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.table import LutSpec

#: Flags every kernel compiles with (the tests add -Werror).
BASE_CFLAGS: tuple[str, ...] = ("-std=c99", "-O2", "-Wall", "-Wextra", "-ffp-contract=off")

#: The kernel kinds and their files (header, source), by kind name.
KERNELS: dict[str, tuple[str, str]] = {
    "lut": ("gelu_lut.h", "gelu_lut.c"),
    "lut_grouped": ("gelu_lut_grouped.h", "gelu_lut_grouped.c"),
    "interp": ("gelu_interp.h", "gelu_interp.c"),
    "pwl": ("gelu_pwl.h", "gelu_pwl.c"),
    "poly_f16": ("gelu_poly_f16.h", "gelu_poly_f16.c"),
    "poly_f32": ("gelu_poly_f32.h", "gelu_poly_f32.c"),
}

_SUFFIX = {"int8": "s8", "uint8": "u8", "int16": "s16", "float16": "f16", "float32": "f32"}
_CTYPE = {
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "float16": "uint16_t",  # IEEE binary16 bit patterns
    "float32": "float",
}


def kernel_source(filename: str) -> str:
    """The text of one shipped kernel file (e.g. ``gelu_lut.c``)."""
    names = {f for pair in KERNELS.values() for f in pair}
    if filename not in names:
        raise BadInputError(f"no kernel file {filename!r}; known: {', '.join(sorted(names))}")
    return (resources.files("gelu_quant.lut") / "kernels" / filename).read_text(encoding="utf-8")


@dataclass(frozen=True)
class KernelCall:
    """How one spec runs: the kernel kind, the C function and its arguments after ``n``."""

    kind: str
    function: str
    in_ctype: str
    out_ctype: str
    args: tuple[str, ...]


def kernel_call(spec: GeluApprox, name: str = "gelu") -> KernelCall:
    """The kernel function that computes ``spec`` and its arguments from ``NAME.h``."""
    ident = _c_ident(name)
    if isinstance(spec, LutSpec):
        i, o = spec.in_qparams.dtype, spec.out_dtype
        table = f"{ident}_table" if spec.in_qparams.code_bits is None else f"{ident}_table_8bit"
        return KernelCall(
            "lut", f"gelu_lut_{_SUFFIX[i]}_{_SUFFIX[o]}", _CTYPE[i], _CTYPE[o], (table,)
        )
    if isinstance(spec, GroupedLutSpec):
        g0 = spec.groups[0]
        widths = {g.in_qparams.code_bits for g in spec.groups}
        if len(widths) > 1:
            raise BadInputError(
                "no C kernel for grouped tables of different input code widths: every group "
                "must have the same width"
            )
        i, o = g0.in_qparams.dtype, g0.out_dtype
        tables = f"{ident}_tables" if widths == {None} else f"{ident}_tables_8bit"
        return KernelCall(
            "lut_grouped",
            f"gelu_lut_grouped_{_SUFFIX[i]}_{_SUFFIX[o]}",
            _CTYPE[i],
            _CTYPE[o],
            (f"{ident.upper()}_CHANNELS", f"{ident}_channel_group", f"&{tables}[0][0]"),
        )
    if isinstance(spec, InterpLutSpec):
        i, o = spec.in_qparams.dtype, spec.out_qparams.dtype
        return KernelCall(
            "interp",
            f"gelu_interp_{_SUFFIX[i]}_{_SUFFIX[o]}",
            _CTYPE[i],
            _CTYPE[o],
            (f"{ident}_knots", f"{spec.shift}u"),
        )
    if isinstance(spec, PwlLutSpec):
        i, o = spec.in_qparams.dtype, spec.out_qparams.dtype
        return KernelCall(
            "pwl",
            f"gelu_pwl_{_SUFFIX[i]}_{_SUFFIX[o]}",
            _CTYPE[i],
            _CTYPE[o],
            (
                f"{ident}_starts",
                f"{ident}_bases",
                f"{ident}_slopes",
                f"{spec.segments}u",
                f"{spec.shift}u",
            ),
        )
    if isinstance(spec, PolySpec):
        arrays = (
            f"{spec.segments}u",
            f"{spec.degree}u",
            f"{ident}_breakpoints",
            f"{ident}_origins",
            f"&{ident}_coefficients[0][0]",
        )
        if spec.io_dtype == "float32":
            return KernelCall("poly_f32", "gelu_poly_f32", "float", "float", arrays)
        fn = "gelu_poly_f16" if spec.compute_dtype == "float16" else "gelu_poly_f16_c32"
        return KernelCall("poly_f16", fn, "uint16_t", "uint16_t", arrays)
    raise BadInputError(
        f"no C kernel for a {spec.kind!r} spec; C kernels exist for lut, grouped_lut, "
        "interp_lut, pwl_lut and poly"
    )


def binding_header(spec: GeluApprox, name: str = "gelu") -> str:
    """``NAME_kernel.h``: ``NAME_gelu(in, out, n)`` calling the kernel with this spec's arrays."""
    ident = _c_ident(name)
    call = kernel_call(spec, name)
    header = KERNELS[call.kind][0]
    guard = f"{ident.upper()}_KERNEL_GELU_QUANT_H"
    args = ", ".join(("in", "out", "n", *call.args))
    f16 = " (IEEE binary16 bit patterns)" if call.in_ctype == "uint16_t" else ""
    layout: list[str] = []
    if isinstance(spec, LutSpec) and spec.in_qparams.code_bits is not None:
        layout = _container_table(spec, ident)
    if isinstance(spec, GroupedLutSpec):
        layout = [
            f"/* Channels of the last axis; value i of `in` is in channel i % "
            f"{ident.upper()}_CHANNELS",
            " * ([rows, channels] row-major), n = rows * channels. */",
            f"#define {ident.upper()}_CHANNELS {spec.channels}u",
            f"#define {ident.upper()}_GROUPS {len(spec.groups)}u",
            "",
        ]
        if spec.groups[0].in_qparams.code_bits is not None:
            layout += _container_tables(spec, ident)
    return "\n".join(
        [
            f"/* Generated by gelu-quant {__version__}. Do not edit. */",
            f"/* {spec.summary()} */",
            f"#ifndef {guard}",
            f"#define {guard}",
            "#include <stddef.h>",
            "#include <stdint.h>",
            f'#include "{ident}.h"',
            f'#include "{header}"',
            "",
            *layout,
            f"/* GELU of n values{f16} as the spec computes it; link {KERNELS[call.kind][1]}. */",
            f"static inline void {ident}_gelu(const {call.in_ctype} *in, {call.out_ctype} *out,"
            " size_t n)",
            "{",
            f"    {call.function}({args});",
            "}",
            "",
            f"#endif /* {guard} */",
            "",
        ]
    )


def _container_table(spec: LutSpec, ident: str) -> list[str]:
    """Low-bit codes in an 8-bit container: the kernel indexes 256 entries (code - container
    qmin), the spec's table has 2**bits. The 256-entry table holds entry ``clip(q, qmin, qmax)``
    for every container code ``q``: the spec's on its codes, the model's ``Clip`` before the
    lookup on the others."""
    qp = spec.in_qparams
    vals = _c_values(_spread(spec))
    ctype = _CTYPE[spec.out_dtype]
    body = ",\n".join("    " + ", ".join(vals[i : i + 12]) for i in range(0, len(vals), 12))
    return [
        f"/* {qp.bits}-bit codes in {qp.dtype}: {ident}_table ({spec.table.size} entries) spread",
        " * over every code of the 8-bit container, codes outside the low-bit range clipped",
        " * to it (as the model's Clip after its QuantizeLinear). */",
        f"static const {ctype} {ident}_table_8bit[256] = {{",
        body,
        "};",
        "",
    ]


def _spread(spec: LutSpec) -> npt.NDArray[Any]:
    """A low-bit table over every code of its 8-bit container: entry ``clip(q, qmin, qmax)``."""
    qp = spec.in_qparams
    cmin = -128 if qp.dtype == "int8" else 0
    q = np.clip(np.arange(cmin, cmin + 256), qp.qmin, qp.qmax)
    return np.ascontiguousarray(spec.table[q - qp.qmin])


def _container_tables(spec: GroupedLutSpec, ident: str) -> list[str]:
    """Grouped tables of low-bit codes: each group's table spread over the 256 codes of the
    8-bit container, as :func:`_container_table` does for one table."""
    g0 = spec.groups[0]
    qp = g0.in_qparams
    ctype = _CTYPE[g0.out_dtype]
    rows = []
    for g in spec.groups:
        vals = _c_values(_spread(g))
        rows.append(
            "    {\n"
            + ",\n".join("        " + ", ".join(vals[i : i + 12]) for i in range(0, len(vals), 12))
            + "\n    }"
        )
    return [
        f"/* {qp.bits}-bit codes in {qp.dtype}: each group's table ({g0.table.size} entries)",
        " * spread over every code of the 8-bit container, codes outside the low-bit range",
        " * clipped to it (as the model's Clip after its QuantizeLinear). */",
        f"static const {ctype} {ident}_tables_8bit[{len(spec.groups)}][256] = {{",
        ",\n".join(rows),
        "};",
        "",
    ]


def kernel_files(spec: GeluApprox, name: str = "gelu") -> dict[str, str]:
    """Every file a C build needs to run ``spec``: ``{filename: text}``.

    ``NAME.h`` (the spec's arrays and parameters), ``NAME_kernel.h`` (``NAME_gelu``) and the
    kernel's header and source. Compile the source with a C99 compiler and
    ``-ffp-contract=off`` (no ``-ffast-math``); add ``-mavx512vbmi -mavx512bw``, ``-mavx2``
    or ``-mssse3`` for the SIMD path of 8-bit tables.
    """
    ident = _c_ident(name)
    call = kernel_call(spec, name)
    files = {f"{ident}.h": c_header(spec, name), f"{ident}_kernel.h": binding_header(spec, name)}
    for filename in KERNELS[call.kind]:
        files[filename] = kernel_source(filename)
    return files


def find_c_compiler() -> str | None:
    """``$CC`` if set and found, else ``cc``, ``gcc`` or ``clang`` on PATH; None without one."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def build_library(
    directory: str | Path,
    *,
    cflags: Sequence[str] = (),
    extra_sources: Sequence[str | Path] = (),
    name: str = "gelukernels",
    kinds: Sequence[str] | None = None,
    cc: str | None = None,
) -> Path:
    """Compile every kernel (and ``extra_sources``) into one shared library in ``directory``.

    For tests and benchmarks that call the kernels through ctypes. The kernel sources are
    written to ``directory`` (only those of ``kinds``, keys of :data:`KERNELS`, if given);
    flags are :data:`BASE_CFLAGS` + ``cflags`` + ``-fPIC -shared``.
    Raises :class:`BadInputError` without a C compiler or when compilation fails.
    """
    compiler = cc or find_c_compiler()
    if compiler is None:
        raise BadInputError("no C compiler found: install gcc or clang, or set CC")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sources = []
    for kind in KERNELS if kinds is None else kinds:
        header, source = KERNELS[kind]
        for filename in (header, source):
            (d / filename).write_text(kernel_source(filename), encoding="utf-8")
        sources.append(str(d / source))
    lib = d / f"lib{name}.so"
    cmd = [
        compiler,
        *BASE_CFLAGS,
        *cflags,
        "-fPIC",
        "-shared",
        "-I",
        str(d),
        "-o",
        str(lib),
        *sources,
        *map(str, extra_sources),
        "-lm",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BadInputError(f"compiling the C kernels failed ({' '.join(cmd)}):\n{done.stderr}")
    return lib
