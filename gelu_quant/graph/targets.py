"""What each ``--target`` builds for a site: :data:`TARGETS`, the spec of one site
(:func:`build_spec`, :func:`grouped_spec`) and the GELU form it must approximate
(:func:`site_form`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.graph.sites import GeluSite
from gelu_quant.lut.grouped import GroupedLutSpec, build_grouped_lut, partition_channels
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.tails import cut_range, negative_tail_cut
from gelu_quant.numerics import QUICK_ALPHA, GeluForm
from gelu_quant.qparams import QParams


@dataclass(frozen=True)
class Target:
    """What a ``--target`` name builds."""

    kind: Literal["lut", "interp", "poly", "baseline", "standard"]
    in_dtype: str = "int8"
    out_dtype: str = "int8"
    segments: int | None = None
    """Interpolated tables: number of segments."""
    baseline: Literal["tanh", "quick", "igelu"] | None = None
    help: str = ""
    bits: int = 8
    """LUT targets: width of the input codes (2..8; below 8 they live in an 8-bit container,
    ``Clip`` after the ``QuantizeLinear``, a ``2**bits``-entry table) and, unless
    :attr:`out_bits` says otherwise, of the output codes."""
    out_bits: int | None = None
    """LUT targets: width of the output codes when it differs from :attr:`bits`
    (``int6-lut-int8out``: 64 entries of int8 codes)."""
    breakpoints: Literal["uniform", "optimized"] = "uniform"
    """Interpolated tables: uniform knots (``InterpLutSpec``) or optimised non-uniform
    breakpoints (``PwlLutSpec``, :mod:`gelu_quant.lut.pwl`)."""

    @property
    def entry_bits(self) -> int:
        """Width of the output codes (the table's entries)."""
        return self.bits if self.out_bits is None else self.out_bits


@dataclass(frozen=True)
class SiteChoice:
    """One site's own target, range method and table count, over the config's
    (``convert --target auto`` writes them: :mod:`gelu_quant.auto_choice`)."""

    site: str
    target: str
    method: str | None = None
    groups: int = 1


TARGETS: dict[str, Target] = {
    "int8-lut": Target("lut", "int8", "int8", help="256-entry table, int8 in and out"),
    "uint8-lut": Target("lut", "uint8", "uint8", help="256-entry table, uint8 in and out"),
    "int8-lut-fp16out": Target("lut", "int8", "float16", help="int8 in, float16 out"),
    "int8-lut-fp32out": Target("lut", "int8", "float32", help="int8 in, float32 out"),
    "int16-lut": Target("lut", "int16", "int16", help="65536-entry table (opset 21)"),
    "int8-qdq-gelu": Target(
        "standard",
        "int8",
        "int8",
        help="standard ops for vendor compilers: Q -> DQ -> Gelu -> Q -> DQ (opset 20)",
    ),
    "uint8-qdq-gelu": Target(
        "standard", "uint8", "uint8", help="as int8-qdq-gelu with uint8 codes (opset 20)"
    ),
    "int8-interp16": Target("interp", segments=16, help="16-segment interpolated table"),
    "int8-interp32": Target("interp", segments=32, help="32-segment interpolated table"),
    "int8-interp64": Target("interp", segments=64, help="64-segment interpolated table"),
    "int8-interp128": Target("interp", segments=128, help="128-segment interpolated table"),
    **{
        f"int8-pwl{n}": Target(
            "interp",
            segments=n,
            breakpoints="optimized",
            help=f"{n}-segment piecewise-linear table, optimised breakpoints, int32 arithmetic",
        )
        for n in (8, 16, 32, 64)
    },
    **{
        f"int16-pwl{n}": Target(
            "interp",
            "int16",
            "int16",
            segments=n,
            breakpoints="optimized",
            help=f"{n}-segment piecewise-linear table, int16 codes in and out (opset 21)",
        )
        for n in (8, 16, 32, 64)
    },
    "fp16-poly": Target("poly", "float16", "float16", help="float16 piecewise polynomial"),
    "fp16-poly-fp32acc": Target("poly", "float16", "float32", help="float16 io, float32 Horner"),
    "fp32-poly": Target("poly", "float32", "float32", help="float32 piecewise polynomial"),
    "fp16-tanh-formula": Target(
        "baseline", "float16", "float16", baseline="tanh", help="baseline: tanh form"
    ),
    "fp32-tanh-formula": Target(
        "baseline", "float32", "float32", baseline="tanh", help="baseline: tanh form"
    ),
    "fp16-quick-gelu": Target(
        "baseline", "float16", "float16", baseline="quick", help="baseline: QuickGELU"
    ),
    "int8-igelu": Target(
        "baseline", "int8", "float32", baseline="igelu", help="baseline: I-BERT i-GELU"
    ),
}

# Low-bit tables: 2..7-bit codes in an 8-bit container (int4-lut: 16 entries, and so on).
TARGETS.update(
    {
        f"{sign}{b}-lut": Target(
            "lut",
            f"{sign}8",
            f"{sign}8",
            bits=b,
            help=f"{2**b}-entry table, {b}-bit {sign} codes in and out (8-bit container)",
        )
        for b in range(7, 1, -1)
        for sign in ("int", "uint")
    }
)
# Small tables of full-width entries: 2..7-bit input codes, 8-bit output codes (a 64-entry
# table of int8 for int6-lut-int8out): the lookup unit is small, the next layer reads int8.
TARGETS.update(
    {
        f"{sign}{b}-lut-{sign}8out": Target(
            "lut",
            f"{sign}8",
            f"{sign}8",
            bits=b,
            out_bits=8,
            help=f"{2**b}-entry table, {b}-bit {sign} codes in, {sign}8 out",
        )
        for b in range(7, 1, -1)
        for sign in ("int", "uint")
    }
)


def low_bits(target: Target) -> tuple[int | None, int | None]:
    """``(in_bits, out_bits)`` of a table target's low-bit codes (None: the dtype's width), as
    :func:`~gelu_quant.lut.table.build_lut` and :func:`~gelu_quant.lut.tails.cut_range` take
    them."""
    lut = target.kind in ("lut", "standard")
    return (
        target.bits if lut and target.bits < 8 else None,
        target.entry_bits if lut and target.entry_bits < 8 else None,
    )


def build_spec(
    target: Target,
    form: GeluForm,
    *,
    in_range: tuple[float, float] | None = None,
    in_qparams: QParams | None = None,
    out_qparams: QParams | None = None,
    poly_segments: int | None = None,
    poly_degree: int | None = None,
) -> GeluApprox:
    """The spec a target builds for one site (a range, or the qparams of a QDQ site).

    Polynomials are fitted where their tails are exact
    (:func:`gelu_quant.lut.poly.build_exact_poly`); ``in_range`` only focuses a non-default
    shape. Baselines that compute GELU refuse the
    quick form, and the QuickGELU baseline is scored against QuickGELU on quick sites.
    """
    if target.kind in ("lut", "standard"):  # standard ops: the table they must reproduce
        from gelu_quant.lut.table import build_lut

        out_dtype: Any = out_qparams.dtype if out_qparams is not None else target.out_dtype
        in_dtype: Any = target.in_dtype
        ib, ob = low_bits(target)
        return build_lut(
            in_range=in_range if in_qparams is None else None,
            in_qparams=in_qparams,
            in_dtype=in_dtype,
            out_dtype=out_dtype,
            out_qparams=out_qparams,
            form=form,
            in_bits=ib if in_qparams is None else None,
            out_bits=ob if out_qparams is None else None,
        )
    if target.kind == "interp" and target.breakpoints == "optimized":
        from gelu_quant.lut.pwl import build_pwl_lut

        assert target.segments is not None
        pwl_in: Any = target.in_dtype
        pwl_out: Any = out_qparams.dtype if out_qparams is not None else target.out_dtype
        return build_pwl_lut(
            segments=target.segments,
            in_range=in_range if in_qparams is None else None,
            in_qparams=in_qparams,
            in_dtype=pwl_in,
            out_dtype=pwl_out,
            out_qparams=out_qparams,
            form=form,
        )
    if target.kind == "interp":
        from gelu_quant.lut.interp import build_interp_lut

        assert target.segments is not None
        return build_interp_lut(
            segments=target.segments,
            in_range=in_range if in_qparams is None else None,
            in_qparams=in_qparams,
            out_dtype=out_qparams.dtype if out_qparams is not None else "int8",
            out_qparams=out_qparams,
            form=form,
        )
    assert in_range is not None
    if target.kind == "baseline":
        from gelu_quant.lut import baselines as bl

        lo, hi = in_range
        fd: Any = target.in_dtype
        if target.baseline == "quick":
            return bl.QuickGeluSpec(lo, hi, fd, fd, form="quick" if form == "quick" else "exact")
        if form == "quick":
            raise SpecError(
                f"the {target.baseline} baseline computes GELU, not QuickGELU; use a table, a "
                "polynomial or fp16-quick-gelu for QuickGELU sites"
            )
        if target.baseline == "igelu":
            return bl.IGeluSpec(lo, hi, in_bits=8, io_dtype="float32")
        return bl.TanhGeluSpec(lo, hi, fd, fd)
    from gelu_quant.lut.poly import build_exact_poly

    io: Any = target.in_dtype
    cp: Any = target.out_dtype
    return build_exact_poly(
        form=form,
        io_dtype=io,
        compute_dtype=cp,
        segments=poly_segments,
        degree=poly_degree,
        focus=in_range,
    )


def _is_quick_alpha(alpha: float, dtype: str | None) -> bool:
    """1.702 as the site's float type stores it (a float16 export holds 1.70215)."""
    if abs(alpha - QUICK_ALPHA) <= 1e-4:
        return True
    return dtype == "float16" and float(np.float16(alpha)) == float(np.float16(QUICK_ALPHA))


def site_form(site: GeluSite, override: GeluForm | None = None) -> GeluForm:
    """The form a site's approximation must have: its own (erf -> exact, tanh, quick), or
    ``override`` between the two GELU forms. Raises SpecError (the site is skipped) when the
    override would replace the site by another function, or for a QuickGELU alpha other than
    1.702."""
    own = site.form
    if own == "quick" and site.alpha is not None and not _is_quick_alpha(site.alpha, site.dtype):
        raise SpecError(
            f"QuickGELU with alpha {site.alpha:.6g}: only alpha {QUICK_ALPHA} is supported "
            "(another alpha is another function)"
        )
    if override is None or override == own:
        return own
    if "quick" in (own, override):
        what = "a QuickGELU" if own == "quick" else "a GELU"
        raise SpecError(
            f"--form {override} on {what} site would approximate a different function; "
            "leave --form out (each site's own form is used)"
        )
    return override


def grouped_spec(
    site: GeluSite | None,
    target: Target,
    form: GeluForm,
    channel_ranges: tuple[np.ndarray, np.ndarray] | None,
    groups: int,
    group_range: Callable[[np.ndarray], tuple[float, float]] | None = None,
) -> GroupedLutSpec:
    """Grouped tables from the site's per-channel extremes: channels partitioned by their
    ranges (:func:`~gelu_quant.lut.grouped.partition_channels`), each group's range its members'
    min/max (or ``group_range(members)``: a range method on the members' statistics) with
    GELU's irrelevant negative tail cut (:mod:`gelu_quant.lut.tails`). ``site``: the graph site,
    whose last axis must have as many channels as the ranges (None: not checked, e.g. a PyTorch
    module, :func:`gelu_quant.torch.prepare_qat`)."""
    ch = channel_ranges
    if ch is None:
        raise ModelError(
            "grouped tables need per-channel ranges and the ranges file has none for this site "
            "(calibrate again with this version of gelu-quant)"
        )
    lo, hi = ch
    shape = None if site is None else site.shape
    if shape is not None and isinstance(shape[-1], int) and shape[-1] != lo.size:
        raise ModelError(
            f"the ranges file has {lo.size} channels for this site, its last axis has {shape[-1]}"
        )
    in_dt: Any = target.in_dtype
    out_dt: Any = target.out_dtype
    ib, ob = low_bits(target)
    hi = np.maximum(hi, 1e-3)  # a channel that never went positive still needs a range
    cut = np.array(
        [
            negative_tail_cut(
                float(h), in_dtype=in_dt, out_dtype=out_dt, form=form, in_bits=ib, out_bits=ob
            )
            for h in hi
        ]
    )
    part = partition_channels(np.maximum(lo, cut), hi, groups)

    def cut_group_range(members: np.ndarray) -> tuple[float, float]:
        if group_range is None:
            glo, ghi = float(lo[members].min()), float(hi[members].max())
        else:
            glo, ghi = group_range(members)
        return cut_range(
            min(glo, -1e-3),
            max(ghi, 1e-3),
            in_dtype=in_dt,
            out_dtype=out_dt,
            form=form,
            in_bits=ib,
            out_bits=ob,
        )

    return build_grouped_lut(
        part, cut_group_range, in_dtype=in_dt, out_dtype=out_dt, form=form, in_bits=ib, out_bits=ob
    )
