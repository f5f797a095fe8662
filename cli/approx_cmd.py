"""``gelu-quant approx``: build one approximation spec, print its summary and error report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click

from gelu_quant.errors import BadInputError
from gelu_quant.fileio import write_text_atomic
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.export import c_header, spec_json_text
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.table import OutDType
from gelu_quant.numerics import GeluForm
from gelu_quant.qparams import QDType

#: CLI spellings of dtypes -> spec dtypes.
DTYPE_ALIASES = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}
EXPORT_FORMATS = ("c-header", "json", "c-kernel")


def dtype_choice(*names: str) -> click.Choice:
    """A case-insensitive choice among CLI dtype spellings."""
    return click.Choice(list(names), case_sensitive=False)


def range_option(f: Any) -> Any:
    return click.option(
        "--range",
        "range_",
        type=float,
        nargs=2,
        required=True,
        metavar="LO HI",
        help="Input range the approximation covers.",
    )(f)


def common_output_options(f: Any) -> Any:
    f = click.option(
        "--export",
        "exports",
        type=(click.Choice(EXPORT_FORMATS), click.Path(writable=True)),
        multiple=True,
        metavar="FORMAT PATH",
        help="Also write the spec: 'c-header FILE', 'json FILE' or 'c-kernel DIR' (NAME.h, "
        "NAME_kernel.h with NAME_gelu(in, out, n), and the C kernel it calls). Repeatable.",
    )(f)
    f = click.option("--name", default="gelu", show_default=True, help="C identifier prefix.")(f)
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print {spec, report} as JSON instead of text."
    )(f)
    return f


def check_range(range_: tuple[float, float]) -> tuple[float, float]:
    lo, hi = range_
    if not lo < hi:
        raise BadInputError(f"--range {lo:g} {hi:g} is empty: need LO < HI")
    return lo, hi


def emit(
    spec: GeluApprox,
    *,
    as_json: bool,
    exports: tuple[tuple[str, str], ...],
    name: str,
    show_table: bool = False,
) -> None:
    """Print the spec's summary and error report (or JSON), then write the exports."""
    report = error_report(spec)
    if as_json:
        doc = {"spec": spec.to_json(), "report": report.to_json()}
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(spec.summary())
        for line in report.lines():
            click.echo("  " + line)
        if show_table:
            for key, arr in spec.arrays().items():
                vals = " ".join(str(v) for v in arr.tolist())
                click.echo(f"  {key}: {vals}")
    for fmt, path in exports:
        if fmt == "c-kernel":
            write_c_kernel(spec, name, Path(path))
        else:
            if Path(path).is_dir():
                raise BadInputError(f"--export {fmt} {path} is a folder: give a file name")
            text = c_header(spec, name) if fmt == "c-header" else spec_json_text(spec)
            write_text_atomic(path, text)
        if not as_json:
            click.echo(f"wrote {fmt} to {path}")


def write_c_kernel(spec: GeluApprox, name: str, folder: Path) -> None:
    """Write the spec's C kernel files into ``folder`` (created if its parent exists)."""
    from gelu_quant.lut.ckernels import kernel_files

    files = kernel_files(spec, name)  # refuses spec kinds without a kernel, before any write
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"--export c-kernel {folder} is a file: give a folder")
    if not folder.parent.is_dir():
        raise BadInputError(f"--export c-kernel {folder}: folder {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)
    for filename, text in files.items():
        write_text_atomic(folder / filename, text)


@click.group()
def approx() -> None:
    """Build an approximation of GELU and report its error against float64."""


@approx.command("lut")
@range_option
@click.option(
    "--in",
    "in_dtype",
    type=dtype_choice("int8", "uint8", "int16"),
    default="int8",
    show_default=True,
    help="Input code dtype.",
)
@click.option(
    "--out",
    "out_dtype",
    type=dtype_choice("int8", "uint8", "int16", "fp16", "float16", "fp32", "float32"),
    default="int8",
    show_default=True,
    help="Output dtype.",
)
@click.option(
    "--form",
    type=click.Choice(["exact", "tanh", "quick"]),
    default="exact",
    show_default=True,
    help="Which GELU the table holds (tanh-GELU and QuickGELU models get their own).",
)
@click.option(
    "--interp",
    "segments",
    type=click.Choice(["16", "32", "64", "128"]),
    default=None,
    help="Build an N-segment table with linear interpolation instead of a full table.",
)
@click.option(
    "--pwl",
    "pwl_segments",
    type=click.Choice(["8", "16", "32", "64"]),
    default=None,
    help="Build an N-segment piecewise-linear table with optimised (non-uniform) breakpoints "
    "and integer interpolation instead of a full table.",
)
@click.option("--table/--no-table", "show_table", default=False, help="Print the entries.")
@common_output_options
def lut_cmd(
    range_: tuple[float, float],
    in_dtype: str,
    out_dtype: str,
    form: str,
    segments: str | None,
    pwl_segments: str | None,
    show_table: bool,
    as_json: bool,
    exports: tuple[tuple[str, str], ...],
    name: str,
) -> None:
    """A lookup table: entry q is Q_out(GELU(DQ_in(q)))."""
    from gelu_quant.lut.interp import build_interp_lut
    from gelu_quant.lut.table import build_lut

    lo, hi = check_range(range_)
    out = cast(OutDType, DTYPE_ALIASES[out_dtype.lower()])
    qin = cast(QDType, in_dtype)
    spec: GeluApprox
    if segments is not None and pwl_segments is not None:
        raise BadInputError("--interp and --pwl are two kinds of small table: give one")
    if pwl_segments is not None:
        from gelu_quant.lut.pwl import build_pwl_lut

        if out not in ("int8", "uint8", "int16"):
            raise BadInputError("--pwl tables have integer outputs: use --out int8|uint8|int16")
        spec = build_pwl_lut(
            segments=int(pwl_segments),
            in_range=(lo, hi),
            in_dtype=qin,
            out_dtype=cast(QDType, out),
            form=cast(GeluForm, form),
        )
    elif segments is not None:
        if out not in ("int8", "uint8", "int16"):
            raise BadInputError("--interp tables have integer outputs: use --out int8|uint8|int16")
        if in_dtype == "int16":
            raise BadInputError("--interp tables take 8-bit input: use --in int8|uint8")
        spec = build_interp_lut(
            segments=int(segments),
            in_range=(lo, hi),
            in_dtype=qin,
            out_dtype=cast(QDType, out),
            form=cast(GeluForm, form),
        )
    else:
        spec = build_lut(in_range=(lo, hi), in_dtype=qin, out_dtype=out, form=cast(GeluForm, form))
    emit(spec, as_json=as_json, exports=exports, name=name, show_table=show_table)


_FLOAT_CHOICE = ("fp16", "float16", "fp32", "float32")


@approx.command("poly")
@range_option
@click.option("--segments", "-k", type=int, required=True, help="Number of segments K (>= 1).")
@click.option("--degree", "-d", type=int, required=True, help="Polynomial degree, 1 to 4.")
@click.option(
    "--dtype",
    type=dtype_choice(*_FLOAT_CHOICE),
    required=True,
    help="Input and output dtype of the op.",
)
@click.option(
    "--compute",
    type=dtype_choice(*_FLOAT_CHOICE),
    default=None,
    help="Horner arithmetic (default: the same as --dtype).",
)
@click.option(
    "--form",
    type=click.Choice(["exact", "tanh", "quick"]),
    default="exact",
    show_default=True,
    help="Which GELU to fit.",
)
@click.option(
    "--breakpoints",
    type=click.Choice(["optimized", "uniform"]),
    default="optimized",
    show_default=True,
    help="Breakpoint placement (both keep a breakpoint at 0).",
)
@common_output_options
def poly_cmd(
    range_: tuple[float, float],
    segments: int,
    degree: int,
    dtype: str,
    compute: str | None,
    form: str,
    breakpoints: str,
    as_json: bool,
    exports: tuple[tuple[str, str], ...],
    name: str,
) -> None:
    """A piecewise polynomial fitted on --range (minimax fit, local coordinates).

    Beyond the range its tails are 0 below and x above, exact only where GELU rounds to those
    in the dtype; the error report covers the whole real line, so a narrow range shows its
    tails' error (conversion fits the exact-tails domain by itself).
    """
    from gelu_quant.lut.poly import MAX_DEGREE, BreakpointMode, FloatDType, build_poly

    lo, hi = check_range(range_)
    if not 1 <= degree <= MAX_DEGREE:
        raise BadInputError(f"--degree {degree}: need 1 to {MAX_DEGREE}")
    if segments < 1:
        raise BadInputError(f"--segments {segments}: need at least 1")
    io = cast(FloatDType, DTYPE_ALIASES[dtype.lower()])
    cp = cast(FloatDType, DTYPE_ALIASES[(compute or dtype).lower()])
    if io == "float32" and cp == "float16":
        raise BadInputError("--compute fp16 needs --dtype fp16 (float32 inputs need fp32 Horner)")
    spec = build_poly(
        lo,
        hi,
        segments,
        degree,
        io_dtype=io,
        compute_dtype=cp,
        form=cast(GeluForm, form),
        breakpoints=cast(BreakpointMode, breakpoints),
    )
    emit(spec, as_json=as_json, exports=exports, name=name)


@approx.command("baseline")
@click.argument("which", type=click.Choice(["tanh", "quick", "igelu"]))
@range_option
@click.option(
    "--dtype",
    type=dtype_choice(*_FLOAT_CHOICE),
    default="fp16",
    show_default=True,
    help="Input and output dtype.",
)
@click.option(
    "--compute",
    type=dtype_choice(*_FLOAT_CHOICE),
    default=None,
    help="Arithmetic of tanh/quick (default: the same as --dtype).",
)
@click.option(
    "--bits",
    type=click.Choice(["8", "16"]),
    default="8",
    show_default=True,
    help="igelu: integer input width (symmetric scale over the range).",
)
@common_output_options
def baseline_cmd(
    which: str,
    range_: tuple[float, float],
    dtype: str,
    compute: str | None,
    bits: str,
    as_json: bool,
    exports: tuple[tuple[str, str], ...],
    name: str,
) -> None:
    """A baseline scored against the exact GELU: the tanh formula, QuickGELU or I-BERT's i-GELU."""
    from gelu_quant.lut.baselines import FloatDType, IGeluSpec, QuickGeluSpec, TanhGeluSpec

    lo, hi = check_range(range_)
    io = cast(FloatDType, DTYPE_ALIASES[dtype.lower()])
    cp = cast(FloatDType, DTYPE_ALIASES[(compute or dtype).lower()])
    spec: GeluApprox
    if which == "igelu":
        spec = IGeluSpec(lo, hi, in_bits=int(bits), io_dtype=io)
    elif which == "tanh":
        spec = TanhGeluSpec(lo, hi, io_dtype=io, compute_dtype=cp)
    else:
        spec = QuickGeluSpec(lo, hi, io_dtype=io, compute_dtype=cp)
    emit(spec, as_json=as_json, exports=exports, name=name)
