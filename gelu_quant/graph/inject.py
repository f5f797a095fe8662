"""Conversion: replace every GELU site of a model by a ``gelu_quant`` custom op.

One library call, :func:`convert_model` (in memory) or :func:`convert_file` (paths, external
data, atomic write, checker), configured by a frozen :class:`ConvertConfig`. Per site:

* **float model**, LUT targets: ``x -> QuantizeLinear -> GeluLut -> DequantizeLinear`` (float16
  models get ``Cast`` to float32 around it; float-output tables get a ``Cast`` instead of the
  ``DequantizeLinear`` when the dtypes differ). The input qparams come from the site's range, the
  output qparams from GELU's output range over the input codes (``build_lut`` defaults).
* **float model**, polynomial targets: ``GeluPoly`` on the tensor directly, with ``Cast`` around
  it when the model's float dtype is not the polynomial's io dtype.
* **QDQ model** (the site has ``qdq_in`` and ``qdq_out``), LUT targets: ``DequantizeLinear ->
  GELU -> QuantizeLinear`` collapses into one ``GeluLut`` from the DQ's int8 input to the Q's int8
  output, its table built from the scales in the graph; no range is needed.
* **bias-folded sites** (``BiasGelu``, ``FastGelu`` with bias): ``Add(x, bias)`` first.
* **QuickGELU sites** (``x·σ(1.702x)``) become approximations *of QuickGELU* (form ``quick``):
  tables, interpolated tables and polynomials of the quick form, or the QuickGELU formula
  baseline; targets that compute GELU itself (the tanh formula, i-GELU) and ``--form exact|tanh``
  skip them with a reason, as they skip GELU sites under ``--form quick``. Only alpha 1.702 is
  supported: a site with another alpha is skipped (it is another function: 1.0 is SiLU).
* **polynomials** are fitted on the domain where their tails are exact in their dtype
  (:func:`gelu_quant.lut.poly.build_exact_poly`), whatever range the site was calibrated to:
  the range never limits correctness; with a shape smaller than the default
  (:data:`gelu_quant.lut.poly.DEFAULT_SHAPES`, which meet their bound everywhere) it decides
  where the accuracy concentrates.
* **QDQ sites with a ranges file**: the graph's own Q/DQ scales are used and the ranges are
  not; the manifest says so in its notes (the CLI also warns on stderr).

The op writes the site's own output tensor name (QDQ sites: the Q's output name), every node
that is not part of a GELU is kept byte for byte, new nodes go where the site's last node was,
and initializers that only the removed nodes used are dropped. Sites inside subgraphs are
reported as skipped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.errors import BadInputError, ModelError, SpecError
from gelu_quant.graph.expand import expand_functions
from gelu_quant.graph.manifest import Manifest, SiteRecord
from gelu_quant.graph.names import ensure_node_names
from gelu_quant.graph.ops import (
    DOMAIN,
    DOMAIN_VERSION,
    LUT_BODIES,
    CustomOp,
    LutBody,
    custom_op,
    onnx_type,
)
from gelu_quant.graph.ops.grouped_lut_op import dequantize_per_channel, quantize_per_channel
from gelu_quant.graph.sites import GeluSite
from gelu_quant.lut.grouped import MAX_GROUPS, GroupedLutSpec, build_grouped_lut, partition_channels
from gelu_quant.lut.report import error_report
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.tails import cut_range, negative_tail_cut
from gelu_quant.modelfile import check_external_data, model_dir, read_model, uses_external_data
from gelu_quant.numerics import GELU_FORMS, QUICK_ALPHA, GeluForm
from gelu_quant.qparams import QParams

MAX_IR_VERSION = 10
"""IR version written when the input's is higher (ORT 1.31 reads up to 13; onnx 1.23 writes 14)."""
MIN_IR_VERSION = 8
"""Model-local functions need IR 8."""


@dataclass(frozen=True)
class Target:
    """What a ``--target`` name builds."""

    kind: Literal["lut", "interp", "poly", "baseline"]
    in_dtype: str = "int8"
    out_dtype: str = "int8"
    segments: int | None = None
    """Interpolated tables: number of segments."""
    baseline: Literal["tanh", "quick", "igelu"] | None = None
    help: str = ""
    bits: int = 8
    """LUT targets: width of the input and output codes (2..8; below 8 they live in an 8-bit
    container, ``Clip`` after the ``QuantizeLinear``, a ``2**bits``-entry table)."""


TARGETS: dict[str, Target] = {
    "int8-lut": Target("lut", "int8", "int8", help="256-entry table, int8 in and out"),
    "uint8-lut": Target("lut", "uint8", "uint8", help="256-entry table, uint8 in and out"),
    "int8-lut-fp16out": Target("lut", "int8", "float16", help="int8 in, float16 out"),
    "int8-lut-fp32out": Target("lut", "int8", "float32", help="int8 in, float32 out"),
    "int16-lut": Target("lut", "int16", "int16", help="65536-entry table (opset 21)"),
    "int8-interp16": Target("interp", segments=16, help="16-segment interpolated table"),
    "int8-interp32": Target("interp", segments=32, help="32-segment interpolated table"),
    "int8-interp64": Target("interp", segments=64, help="64-segment interpolated table"),
    "int8-interp128": Target("interp", segments=128, help="128-segment interpolated table"),
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


class RangeSource(Protocol):
    """Where per-site input ranges come from (``RangesFile`` fulfils it)."""

    def range_for(self, site_id: str, method: str | None = None) -> tuple[float, float]: ...

    def channel_ranges_for(self, site_id: str) -> tuple[np.ndarray, np.ndarray] | None: ...


@dataclass(frozen=True)
class ConvertConfig:
    """Everything that decides what :func:`convert_model` writes."""

    target: str
    range: tuple[float, float] | None = None
    """One input range for every float site (``--range``)."""
    ranges_file: str | None = None
    """The calibrator's ranges file (``--ranges``); per-site ranges win over ``range``."""
    method: str | None = None
    """Range method to read from the ranges file (default: the file's chosen one)."""
    force: bool = False
    """Use a ranges file made for a different model fingerprint."""
    form: GeluForm | None = None
    """GELU form the specs approximate; default: the site's own (tanh sites -> tanh)."""
    expand: bool = False
    """Inline the function bodies (runtimes without model-local functions)."""
    lut_body: LutBody = "auto"
    poly_segments: int | None = None
    """Polynomial segments; None: the default shape for the target and form."""
    poly_degree: int | None = None
    """Polynomial degree; None: the default shape for the target and form."""
    sites: tuple[str, ...] | None = None
    """Convert only these site ids (others are reported as skipped)."""
    verify: bool = True
    """Prove formula bodies equal to their tables by running them (ORT and onnx.reference)."""
    check: bool = True
    """Run ``onnx.checker.check_model(full_check=True)`` on the result."""
    tail_cut: bool = True
    """Start a calibrated table range where GELU's negative tail stops mattering
    (:mod:`gelu_quant.lut.tails`: no output changes below the cut, finer codes above it).
    Explicit ``--range`` values are used as given."""
    groups: int = 1
    """Tables per float site: > 1 gives grouped tables (channels of the last axis partitioned
    by their calibrated ranges, each group its own qparams and table; needs a ranges file with
    per-channel extremes). 8-bit table targets only."""

    def __post_init__(self) -> None:
        g = self.groups
        if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= MAX_GROUPS:
            raise BadInputError(f"--groups must be an integer from 1 to {MAX_GROUPS}, got {g!r}")
        t = TARGETS.get(self.target)
        if g > 1 and t is not None and (t.kind != "lut" or t.in_dtype not in ("int8", "uint8")):
            raise BadInputError(
                f"--groups applies to 8-bit table targets (int8-lut, uint8-lut, int8-lut-fp16out, "
                f"…), not {self.target}"
            )
        if g > 1 and self.range is not None and self.ranges_file is None:
            raise BadInputError(
                "--groups needs per-channel ranges: pass --ranges RANGES.json from calibrate"
            )
        if self.target not in TARGETS:
            raise BadInputError(
                f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}"
            )
        if self.range is not None:
            lo, hi = (float(v) for v in self.range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise BadInputError(f"--range {lo} {hi}: need finite LO < HI")
            object.__setattr__(self, "range", (lo, hi))
        if self.lut_body not in LUT_BODIES:
            raise BadInputError(f"unknown LUT body {self.lut_body!r}")
        if self.form is not None and self.form not in GELU_FORMS:
            raise BadInputError(
                f"unknown GELU form {self.form!r}; expected one of {', '.join(GELU_FORMS)}"
            )
        if self.sites is not None:
            object.__setattr__(self, "sites", tuple(self.sites))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["range"] = None if self.range is None else list(self.range)
        d["sites"] = None if self.sites is None else list(self.sites)
        d["ranges_file"] = None if self.ranges_file is None else os.path.basename(self.ranges_file)
        return d


@dataclass
class ConvertResult:
    """The converted model and what was done to each site."""

    model: onnx.ModelProto
    manifest: Manifest
    functions: dict[str, CustomOp] = field(default_factory=dict)
    """The custom ops used, by op type."""


# -- spec choice ----------------------------------------------------------------
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
    if target.kind == "lut":
        from gelu_quant.lut.table import build_lut

        out_dtype: Any = out_qparams.dtype if out_qparams is not None else target.out_dtype
        in_dtype: Any = target.in_dtype
        low = target.bits if target.bits < 8 else None
        return build_lut(
            in_range=in_range if in_qparams is None else None,
            in_qparams=in_qparams,
            in_dtype=in_dtype,
            out_dtype=out_dtype,
            out_qparams=out_qparams,
            form=form,
            in_bits=low if in_qparams is None else None,
            out_bits=low if out_qparams is None else None,
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


_SITE_FORMS: dict[str, GeluForm] = {"erf": "exact", "tanh": "tanh", "quick": "quick"}


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
    own = _SITE_FORMS[site.variant]
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


# -- graph bookkeeping ----------------------------------------------------------------
def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a graph (and its nested subgraphs) reads."""
    names: set[str] = set()
    for n in graph.node:
        names |= _node_reads(n)
    return names


def _node_reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs and whatever its subgraphs read."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            names |= _subgraph_inputs(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            for g in a.graphs:
                names |= _subgraph_inputs(g)
    return names


def _all_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        names.update(i.name for i in g.input)
        names.update(o.name for o in g.output)
        names.update(t.name for t in g.initializer)
        names.update(v.name for v in g.value_info)
        for n in g.node:
            names.add(n.name)
            names.update(n.input)
            names.update(n.output)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg)

    walk(model.graph)
    return names


class _Namer:
    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name


def _default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError("the model imports no default-domain opset")


# -- one site ----------------------------------------------------------------
@dataclass
class _Plan:
    """New nodes and initializers for one site, and what they replace."""

    site: GeluSite
    remove: set[int]
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    op: CustomOp
    spec: GeluApprox
    mode: Literal["float", "qdq"]
    range: tuple[float, float] | None
    range_source: str
    output_tensor: str | None
    quantized_output: dict[str, Any] | None


def _report(spec: GeluApprox) -> Any:
    """The spec's error report; for grouped tables the worst group's."""
    if isinstance(spec, GroupedLutSpec):
        return max((error_report(g) for g in spec.groups), key=lambda r: r.max_abs)
    return error_report(spec)


def _expand(spec: GroupedLutSpec, per_group: list[Any]) -> np.ndarray:
    """A per-group value repeated for every channel of its group (per-axis Q/DQ parameters)."""
    return np.asarray(per_group)[spec.channel_group]


def _grouped_spec(
    site: GeluSite, target: Target, form: GeluForm, ranges: RangeSource, groups: int
) -> GroupedLutSpec:
    """Grouped tables from the site's per-channel extremes: channels partitioned by their
    ranges (:func:`~gelu_quant.lut.grouped.partition_channels`), each group's range its members'
    min/max with GELU's irrelevant negative tail cut (:mod:`gelu_quant.lut.tails`)."""
    ch = ranges.channel_ranges_for(site.id)
    if ch is None:
        raise ModelError(
            "grouped tables need per-channel ranges and the ranges file has none for this site "
            "(calibrate again with this version of gelu-quant)"
        )
    lo, hi = ch
    if site.shape is not None and isinstance(site.shape[-1], int) and site.shape[-1] != lo.size:
        raise ModelError(
            f"the ranges file has {lo.size} channels for this site, its last axis has "
            f"{site.shape[-1]}"
        )
    in_dt: Any = target.in_dtype
    out_dt: Any = target.out_dtype
    hi = np.maximum(hi, 1e-3)  # a channel that never went positive still needs a range
    cut = np.array(
        [negative_tail_cut(float(h), in_dtype=in_dt, out_dtype=out_dt, form=form) for h in hi]
    )
    part = partition_channels(np.maximum(lo, cut), hi, groups)

    def group_range(members: np.ndarray) -> tuple[float, float]:
        return cut_range(
            min(float(lo[members].min()), -1e-3),
            float(hi[members].max()),
            in_dtype=in_dt,
            out_dtype=out_dt,
            form=form,
        )

    return build_grouped_lut(part, group_range, in_dtype=in_dt, out_dtype=out_dt, form=form)


def _skip(site: GeluSite, reason: str) -> SiteRecord:
    return SiteRecord.for_site(site, "skipped", reason=reason)


def _plan_site(
    site: GeluSite,
    graph: onnx.GraphProto,
    index_of: Mapping[str, int],
    config: ConvertConfig,
    ranges: RangeSource | None,
    opset: int,
    new_name: _Namer,
    readers: _Readers,
) -> _Plan:
    """Decide the replacement of one site (raises SpecError/ModelError/BadInputError to skip)."""
    target = TARGETS[config.target]
    form = site_form(site, config.form)
    missing = [n for n in site.nodes if n not in index_of]
    if missing:
        raise ModelError(f"nodes {missing} of the site are not in the main graph")
    remove = {index_of[n] for n in site.nodes}
    nodes = graph.node
    collapse = (
        target.kind in ("lut", "interp")
        and site.qdq_in is not None
        and site.qdq_out is not None
        and site.bias is None
    )
    pre = f"{site.id}_gq"
    new_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(base: str, value: Any, dtype: Any) -> str:
        name = new_name(f"{pre}_{base}")
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(
        op_type: str, inputs: list[str], out_base: str, out: str | None = None, **attrs: Any
    ) -> str:
        y = out if out is not None else new_name(f"{pre}_{out_base}")
        new_nodes.append(
            helper.make_node(op_type, inputs, [y], name=new_name(f"{pre}_{op_type}"), **attrs)
        )
        return y

    if collapse:
        assert site.qdq_in is not None and site.qdq_out is not None
        qin, qout = site.qdq_in, site.qdq_out
        in_qp = QParams(qin.scale, qin.zero_point, qin.dtype, qin.bits)  # type: ignore[arg-type]
        out_qp = QParams(qout.scale, qout.zero_point, qout.dtype, qout.bits)  # type: ignore[arg-type]
        spec = build_spec(target, form, in_qparams=in_qp, out_qparams=out_qp)
        op = custom_op(spec, opset=opset, lut_body=config.lut_body, verify=config.verify)
        for n in (qin.node, qout.node):
            if n not in index_of:
                raise ModelError(f"Q/DQ node {n!r} of the site is not in the main graph")
        dq_i, q_i = index_of[qin.node], index_of[qout.node]
        remove.add(q_i)
        # the DQ goes too when nothing else reads its output
        dq_out = nodes[dq_i].output[0]
        if not readers.still_read(dq_out, remove):
            remove.add(dq_i)
        new_nodes.append(op.node(qin.tensor, qout.tensor, new_name(f"{pre}_{op.kind}")))
        out_q = {
            "tensor": qout.tensor,
            "scale": qout.scale,
            "zero_point": qout.zero_point,
            "dtype": qout.dtype,
        }
        output_tensor: str | None = None
        if readers.still_read(site.output, remove):
            s = init("out_scale", qout.scale, np.float32)
            z = init("out_zero_point", qout.zero_point, out_qp.np_dtype)
            y = node("DequantizeLinear", [qout.tensor, s, z], "", out=site.output)
            if site.dtype == "float16":
                raise ModelError("float16 QDQ site whose float output is read elsewhere")
            output_tensor = y
        plan = _Plan(
            site, remove, new_nodes, inits, op, spec, "qdq", None, "qdq", output_tensor, out_q
        )
    else:
        if target.kind != "poly" and site.dtype not in ("float32", "float16"):
            raise ModelError(f"site dtype {site.dtype} is not float32 or float16")
        if ranges is not None:
            try:
                rng = ranges.range_for(site.id, config.method)
            except BadInputError as e:  # e.g. a site the calibrator skipped: skip it too
                raise ModelError(str(e)) from None
            source = f"ranges:{config.method or 'chosen'}"
            if (
                config.tail_cut
                and target.kind in ("lut", "interp")
                and target.in_dtype
                in (
                    "int8",
                    "uint8",
                )
            ):
                cut = cut_range(
                    *rng,
                    in_dtype=target.in_dtype,  # type: ignore[arg-type]
                    out_dtype=target.out_dtype or "int8",  # type: ignore[arg-type]
                    form=form,
                )
                if cut != rng:
                    rng, source = cut, source + ", tail cut"
        elif config.range is not None:
            rng, source = config.range, "--range"
        else:
            raise BadInputError(
                f"site {site.id} is a float site and needs a range: pass --range LO HI or "
                "--ranges RANGES.json"
            )
        if config.groups > 1:
            assert ranges is not None
            spec = _grouped_spec(site, target, form, ranges, config.groups)
            source = "ranges:per-channel minmax, tail cut"
            rng = spec.domain
        else:
            spec = build_spec(
                target,
                form,
                in_range=rng,
                poly_segments=config.poly_segments,
                poly_degree=config.poly_degree,
            )
        op = custom_op(spec, opset=opset, lut_body=config.lut_body, verify=config.verify)
        x = site.input
        if site.bias is not None:
            x = node("Add", [x, site.bias], "biased")
        site_t = onnx_type(site.dtype)
        if target.kind in ("lut", "interp"):
            if "int16" in (target.in_dtype, target.out_dtype) and opset < 21:
                raise ModelError(
                    f"int16 QuantizeLinear/DequantizeLinear need opset 21; the model imports "
                    f"{opset} (convert it with onnx.version_converter, or use an 8-bit target)"
                )
            if site.dtype != "float32":
                x = node("Cast", [x], "x_f32", to=TensorProto.FLOAT)
            if isinstance(spec, GroupedLutSpec):  # per-channel Q/DQ around the grouped op
                qps = [g.in_qparams for g in spec.groups]
                s = init("in_scale", _expand(spec, [q.scale for q in qps]), np.float32)
                z = init("in_zero_point", _expand(spec, [q.zero_point for q in qps]), np.float32)
                codes = new_name(f"{pre}_codes")
                p_in = new_name(f"{pre}_quant") + "_"
                for n in quantize_per_channel(x, s, z, codes, qps[0].np_dtype, prefix=p_in):
                    n.name = new_name(f"{pre}_{n.op_type}")
                    new_nodes.append(n)
                y = new_name(f"{pre}_out_codes")
                new_nodes.append(op.node(codes, y, new_name(f"{pre}_{op.kind}")))
                oqs = [g.out_qparams for g in spec.groups if g.out_qparams is not None]
                if not oqs:  # float-output tables
                    if op.output_type == site_t:
                        new_nodes[-1].output[0] = site.output
                    else:
                        node("Cast", [y], "", out=site.output, to=site_t)
                else:
                    s = init("out_scale", _expand(spec, [q.scale for q in oqs]), np.float32)
                    zo = _expand(spec, [q.zero_point for q in oqs])
                    z = init("out_zero_point", zo, np.float32)
                    out = site.output if site.dtype == "float32" else new_name(f"{pre}_y_f32")
                    p_out = new_name(f"{pre}_dequant") + "_"
                    for n in dequantize_per_channel(y, s, z, out, prefix=p_out):
                        n.name = new_name(f"{pre}_{n.op_type}")
                        new_nodes.append(n)
                    if site.dtype != "float32":
                        node("Cast", [out], "", out=site.output, to=site_t)
                plan = _Plan(
                    site,
                    remove,
                    new_nodes,
                    inits,
                    op,
                    spec,
                    "float",
                    rng,
                    source,
                    site.output,
                    None,
                )
                _check_internal_tensors(plan, graph, readers)
                return plan
            qp = spec.in_qparams  # type: ignore[attr-defined]
            s = init("in_scale", qp.scale, np.float32)
            z = init("in_zero_point", qp.zero_point, qp.np_dtype)
            codes = node("QuantizeLinear", [x, s, z], "codes")
            if qp.code_bits is not None:  # low-bit codes: saturate to their range
                lo = init("in_qmin", qp.qmin, qp.np_dtype)
                hi = init("in_qmax", qp.qmax, qp.np_dtype)
                codes = node("Clip", [codes, lo, hi], "codes_clipped")
            lut_out_qp: QParams | None = getattr(spec, "out_qparams", None)
            if lut_out_qp is None:  # float-output table
                if op.output_type == site_t:
                    new_nodes.append(op.node(codes, site.output, new_name(f"{pre}_{op.kind}")))
                else:
                    y = new_name(f"{pre}_y")
                    new_nodes.append(op.node(codes, y, new_name(f"{pre}_{op.kind}")))
                    node("Cast", [y], "", out=site.output, to=site_t)
            else:
                y = new_name(f"{pre}_out_codes")
                new_nodes.append(op.node(codes, y, new_name(f"{pre}_{op.kind}")))
                s = init("out_scale", lut_out_qp.scale, np.float32)
                z = init("out_zero_point", lut_out_qp.zero_point, lut_out_qp.np_dtype)
                if site.dtype == "float32":
                    node("DequantizeLinear", [y, s, z], "", out=site.output)
                else:
                    f = node("DequantizeLinear", [y, s, z], "y_f32")
                    node("Cast", [f], "", out=site.output, to=site_t)
        else:
            io_t = op.input_type
            if io_t != site_t:
                x = node("Cast", [x], "x_io", to=io_t)
                y = new_name(f"{pre}_y")
                new_nodes.append(op.node(x, y, new_name(f"{pre}_{op.kind}")))
                node("Cast", [y], "", out=site.output, to=site_t)
            else:
                new_nodes.append(op.node(x, site.output, new_name(f"{pre}_{op.kind}")))
        plan = _Plan(
            site, remove, new_nodes, inits, op, spec, "float", rng, source, site.output, None
        )
    _check_internal_tensors(plan, graph, readers)
    return plan


class _Readers:
    """Which main-graph nodes read each tensor (subgraph reads count for their node)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.outputs = {o.name for o in graph.output}
        self.by_tensor: dict[str, list[int]] = {}
        for i, n in enumerate(graph.node):
            for t in _node_reads(n):
                self.by_tensor.setdefault(t, []).append(i)

    def still_read(self, tensor: str, removed: set[int]) -> bool:
        """Is ``tensor`` a graph output or read by a node that is not removed?"""
        if tensor in self.outputs:
            return True
        return any(i not in removed for i in self.by_tensor.get(tensor, ()))


def _check_internal_tensors(plan: _Plan, graph: onnx.GraphProto, readers: _Readers) -> None:
    """Refuse a site whose removed nodes produce tensors that other nodes still read."""
    written = {o for n in plan.nodes for o in n.output}
    for i in plan.remove:
        for out in graph.node[i].output:
            if out and out not in written and readers.still_read(out, plan.remove):
                raise ModelError(
                    f"tensor {out!r} inside the GELU is also read outside it; the site cannot be "
                    "replaced without changing other nodes"
                )


# -- the whole model ----------------------------------------------------------------
def convert_model(
    model: onnx.ModelProto,
    config: ConvertConfig,
    *,
    sites: Iterable[GeluSite] | None = None,
    ranges: RangeSource | None = None,
    source_name: str = "",
) -> ConvertResult:
    """Replace the GELU sites of ``model`` (not modified) per ``config``.

    ``sites`` defaults to :func:`gelu_quant.graph.discover.find_gelu_sites`; ``ranges`` (for
    example a loaded ``RangesFile``) gives per-site ranges, else ``config.range`` is used for
    every float site. Sites that cannot be converted are reported as skipped in the manifest;
    a conversion that converts nothing raises ``ModelError``.
    """
    if sites is None:
        from gelu_quant.graph.discover import find_gelu_sites

        sites = find_gelu_sites(model)
    sites = list(sites)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = _default_opset(out)
    named = ensure_node_names(model)
    index_of = {n.name: i for i, n in enumerate(named.graph.node)}
    new_name = _Namer(_all_names(named))
    graph = out.graph
    records: list[SiteRecord] = []
    plans: list[_Plan] = []
    claimed: set[int] = set()
    readers = _Readers(graph)
    for site in sites:
        if site.in_subgraph:
            records.append(_skip(site, f"inside subgraph {site.graph}; not converted"))
            continue
        if config.sites is not None and site.id not in config.sites:
            records.append(_skip(site, "not selected (--site)"))
            continue
        try:
            plan = _plan_site(site, graph, index_of, config, ranges, opset, new_name, readers)
        except (ModelError, SpecError) as e:
            records.append(_skip(site, str(e)))
            continue
        if plan.remove & claimed:
            records.append(_skip(site, "shares nodes with another site"))
            continue
        claimed |= plan.remove
        plans.append(plan)
        rep = _report(plan.spec)
        records.append(
            SiteRecord.for_site(
                site,
                "converted",
                mode=plan.mode,
                range=plan.range,
                range_source=plan.range_source,
                op_type=plan.op.op_type,
                body=plan.op.body_kind,
                body_notes=plan.op.notes,
                replaced_nodes=tuple(named.graph.node[i].name for i in sorted(plan.remove)),
                added_nodes=tuple(n.name for n in plan.nodes),
                output_tensor=plan.output_tensor,
                quantized_output=plan.quantized_output,
                spec=plan.spec.to_json(),
                error=rep.to_json(),
                form=plan.spec.form,
                cost=getattr(plan.spec, "cost", None),
            )
        )
    if config.sites is not None:
        unknown = set(config.sites) - {s.id for s in sites}
        if unknown:
            raise BadInputError(f"no site named {', '.join(sorted(unknown))} in the model")
    if not plans:
        why = "; ".join(f"{r.id}: {r.reason}" for r in records) or "the model has no GELU"
        raise ModelError(f"nothing to convert ({why})")
    _rewrite(out, plans)
    functions: dict[str, CustomOp] = {}
    for p in plans:
        functions.setdefault(p.op.op_type, p.op)
    if config.expand:
        expanded = onnx.ModelProto()
        expanded.CopyFrom(out)
        for op in functions.values():
            expanded.functions.append(op.function())
        out = expand_functions(expanded)
    else:
        for op in functions.values():
            out.functions.append(op.function())
    weights = sum(len(t.raw_data) for t in out.graph.initializer)
    notes: list[str] = []
    # in-memory check for models far from protobuf's 2 GB limit; convert_file checks the
    # written file instead, whatever its size
    if config.check and weights < (1 << 30) and not uses_external_data(out):
        problem = _checker_error(out)
        if problem is not None:
            source_problem = _checker_error(model)
            if source_problem is None:
                raise ModelError(f"the converted model fails the ONNX checker: {problem}")
            notes.append(_unchecked_note(problem, source_problem))
    qdq_ids = [p.site.id for p in plans if p.mode == "qdq"]
    if qdq_ids and (ranges is not None or config.range is not None):
        notes.append(qdq_ranges_note(qdq_ids, "--ranges" if ranges is not None else "--range"))
    manifest = Manifest(
        target=config.target,
        config=config.to_json(),
        sites=tuple(records),
        source_name=source_name,
        expanded=config.expand,
        notes=tuple(notes),
    )
    return ConvertResult(out, manifest, functions)


def qdq_ranges_note(site_ids: list[str], option: str) -> str:
    """The note saying a QDQ model's own scales were used, not the given ranges."""
    return (
        f"{option} not used for {len(site_ids)} QDQ site(s) ({', '.join(site_ids)}): their "
        "tables were built from the QuantizeLinear/DequantizeLinear scales already in the graph"
    )


def _rewrite(model: onnx.ModelProto, plans: list[_Plan]) -> None:
    graph = model.graph
    old = list(graph.node)
    at_last: dict[int, _Plan] = {max(p.remove): p for p in plans}
    removed = set().union(*(p.remove for p in plans))
    dropped_reads: set[str] = set()
    new_list: list[onnx.NodeProto] = []
    for i, n in enumerate(old):
        if i in at_last:
            new_list.extend(at_last[i].nodes)
        if i in removed:
            dropped_reads |= _node_reads(n)
            continue
        new_list.append(n)
    del graph.node[:]
    graph.node.extend(new_list)
    # initializers only the removed nodes read
    still = _subgraph_inputs(graph) | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in still or t.name not in dropped_reads]
    for p in plans:
        keep.extend(p.initializers)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # value_info of tensors that no longer exist
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    produced |= {t.name for t in graph.initializer}
    vi = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(vi)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    if model.ir_version < MIN_IR_VERSION:
        model.ir_version = MIN_IR_VERSION
    elif model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION


# -- files ----------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def default_manifest_path(output: str | os.PathLike[str]) -> Path:
    """``OUT.manifest.json`` for ``OUT.onnx``."""
    p = Path(output)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.manifest.json")


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: ConvertConfig,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    sites: Iterable[GeluSite] | None = None,
) -> ConvertResult:
    """Convert the model file ``src`` into ``dst`` and write the manifest beside it.

    External data stays external (``<dst name>.data`` beside ``dst``, when the input had any);
    files are written atomically, the checker runs on the written file (so models over 2 GB are
    checked too), and neither ``src`` nor its data file is ever overwritten.
    """
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise BadInputError(f"model file {str(src_p)!r} not found")
    if not dst_p.resolve().parent.is_dir():
        raise BadInputError(f"output folder {str(dst_p.resolve().parent)!r} does not exist")
    if dst_p.resolve() == src_p.resolve():
        raise BadInputError(f"refusing to overwrite the input {str(src_p)!r}; choose another -o")
    man_p = Path(manifest_path) if manifest_path is not None else default_manifest_path(dst_p)
    if man_p.resolve() in (src_p.resolve(), dst_p.resolve()):
        raise BadInputError(f"manifest path {str(man_p)!r} collides with a model file")
    header = read_model(src_p)  # external data checked: nothing is read outside its folder
    refs = check_external_data(header, model_dir(src_p))
    external = bool(refs)
    data_name = f"{dst_p.name}.data"
    if external:
        inputs_data = {r.path for r in refs}
        if (dst_p.resolve().parent / data_name).resolve() in inputs_data:
            raise BadInputError(
                f"the output's data file {data_name!r} is the input's external data file; "
                "choose another output name"
            )
    ranges = None
    if config.ranges_file is not None:
        from gelu_quant.calib.ranges_file import load_ranges

        rf = load_ranges(config.ranges_file)
        rf.check_model(str(src_p), force=config.force)
        ranges = rf
    if sites is None:
        from gelu_quant.graph.discover import find_gelu_sites

        sites = find_gelu_sites(str(src_p))
    from gelu_quant.calib.ranges_file import model_fingerprint

    fingerprint = model_fingerprint(str(src_p))
    model = read_model(src_p, external_data=True) if external else header
    # the checker runs on the written file (works beyond 2 GB), not in memory
    in_memory = dataclasses.replace(config, check=False)
    result = convert_model(model, in_memory, sites=sites, ranges=ranges, source_name=src_p.name)
    del model, header
    # tensors under the size threshold stay inline: a small model may end up with no data file
    wrote_data, check_note = _save_atomic(
        result.model, dst_p, data_name if external else None, check=config.check, source=src_p
    )
    result.manifest = Manifest(
        target=result.manifest.target,
        config=config.to_json(),
        sites=result.manifest.sites,
        source_name=src_p.name,
        source_fingerprint=fingerprint,
        output_name=dst_p.name,
        expanded=config.expand,
        external_data=data_name if wrote_data else None,
        notes=result.manifest.notes + ((check_note,) if check_note else ()),
    )
    result.manifest.save(man_p)
    return result


def _checker_error(model: onnx.ModelProto | str) -> str | None:
    """``onnx.checker``'s full check: None when it passes, else its message on one line."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # ValidationError, InferenceError, ValueError, …
        return _one_line(e)
    return None


def _unchecked_note(problem: str, source_problem: str) -> str:
    return (
        "the converted model was not held to onnx.checker: the input model itself fails it "
        f"({source_problem[:200]}); the converted model's check says: {problem[:200]}"
    )


def _save_atomic(
    model: onnx.ModelProto,
    dst: Path,
    data_name: str | None,
    *,
    check: bool,
    source: Path | None = None,
) -> tuple[bool, str | None]:
    """Write ``dst`` (and its data file ``data_name``) atomically; whether a data file was
    written (tensors under 1 KB stay inline), and a note when the checker could not be held to
    (the input ``source`` fails it too: gelu-quant keeps what it was given, and says so)."""
    folder = dst.resolve().parent
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=folder))
    try:
        tmp_model = tmpdir / dst.name
        if data_name is None:
            if model.ByteSize() >= (1 << 31) - 1:
                raise ModelError("the converted model exceeds 2 GB; give it external data")
            tmp_model.write_bytes(model.SerializeToString(deterministic=True))
        else:
            onnx.save_model(
                model,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
                convert_attribute=False,
            )
        note = None
        problem = _checker_error(str(tmp_model)) if check else None
        if problem is not None:
            source_problem = _checker_error(str(source)) if source is not None else None
            if source_problem is None:
                raise ModelError(f"the converted model fails the ONNX checker: {problem}")
            note = _unchecked_note(problem, source_problem)
        wrote_data = data_name is not None and (tmpdir / data_name).exists()
        if wrote_data:
            os.replace(tmpdir / data_name, folder / data_name)  # type: ignore[operator]
        os.replace(tmp_model, dst)
        return wrote_data, note
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
