"""What replaces one GELU site: a small rule per kind of replacement.

Each rule (:class:`QdqCollapse`, :class:`FourBitFloatTable`, :class:`FloatTable`,
:class:`GroupedFloatTable`, :class:`FloatOp`) turns a site into a :class:`Rewrite`: the nodes to
remove, the new nodes and initializers (written as ONNX nodes over tensor *names*, so that every
name is chosen here, deterministically), and which existing tensors the new nodes take over. The
pass (:mod:`gelu_quant.graph.passes.replace_sites`) applies rewrites to the onnx-ir graph: it
wires the names to values, moves the readers of taken-over tensors to the new values and removes
what the site was.

Per site:

* **QDQ model**, table targets: ``DequantizeLinear -> GELU -> QuantizeLinear`` collapses into one
  op from the DQ's codes to the Q's codes, its table built from the graph's scales (per-axis
  Q/DQ on the last axis: one grouped-table op, a table per group of channels with equal qparams);
* **float model**, table targets: ``QuantizeLinear -> op -> DequantizeLinear`` (``Cast`` to
  float32 around it for float16 models; a ``Cast`` instead of the ``DequantizeLinear`` for
  float-output tables; ``Clip`` to the code range for low-bit codes); codes of at most 4 bits
  at opset >= 21 as INT4/UINT4 tensors (:class:`FourBitFloatTable`,
  :mod:`gelu_quant.graph.ops.int4_codes`);
* **float model**, grouped tables: per-channel quantize and dequantize around the op;
* **float model**, polynomial and baseline targets: the op on the tensor, ``Cast`` around it when
  the model's float type is not the op's;
* bias-folded spellings get ``Add(x, bias)`` first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.errors import BadInputError, ModelError, SpecError
from gelu_quant.graph.axis_groups import axis_grouped_spec
from gelu_quant.graph.ops import CustomOp, LutBody, custom_op, onnx_type
from gelu_quant.graph.ops.grouped_lut_op import dequantize_per_channel, quantize_per_channel
from gelu_quant.graph.ops.int4_codes import (
    CodeContainer,
    four_bit_target,
    four_bit_tensor,
    four_bit_type,
    int4_lut_op,
    is_full_four_bit,
    type_name,
)
from gelu_quant.graph.sites import GeluSite
from gelu_quant.graph.targets import Target, build_spec, grouped_spec, low_bits
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.lut.tails import cut_range
from gelu_quant.numerics import QUICK_ALPHA, GeluForm
from gelu_quant.qparams import QParams


class RangeSource(Protocol):
    """Where per-site input ranges come from (``gelu_quant.calib.ranges_file.RangesFile``)."""

    def method_of(self, site_id: str, method: str | None = None) -> str: ...

    def range_for(
        self,
        site_id: str,
        method: str | None = None,
        *,
        bits: int | None = None,
        out_bits: int | None = None,
    ) -> tuple[float, float]: ...

    def channel_ranges_for(self, site_id: str) -> tuple[np.ndarray, np.ndarray] | None: ...

    def group_range_for(
        self,
        site_id: str,
        members: np.ndarray,
        method: str,
        form: str = "exact",
        bits: int | None = None,
        out_bits: int | None = None,
    ) -> tuple[float, float]: ...


@dataclass(frozen=True)
class SiteContext:
    """What a rule needs besides the site: the choices of the conversion and the graph's facts."""

    target: Target
    form: GeluForm
    opset: int
    lut_body: LutBody
    verify: bool
    method: str | None
    range: tuple[float, float] | None
    ranges: RangeSource | None
    groups: int
    tail_cut: bool
    group_method: str
    """Range method of each group of grouped tables (on the members' summed histograms)."""
    poly_segments: int | None
    poly_degree: int | None
    new_name: Callable[[str], str]
    """A fresh tensor/node name for a base name."""
    still_read: Callable[[str, set[str]], bool]
    """Is the tensor a graph output or read by a node outside the given node names?"""
    output_of: Callable[[str], str]
    """The first output of a main-graph node (ModelError when there is no such node)."""
    code_container: CodeContainer = "auto"
    """Low-bit table codes: INT4/UINT4 tensors (``int4``; ``auto`` at opset >= 21) or the
    8-bit container (:mod:`gelu_quant.graph.ops.int4_codes`)."""


@dataclass
class Rewrite:
    """The replacement of one site."""

    site: GeluSite
    remove: set[str]
    """Names of the nodes it replaces."""
    op: CustomOp | None
    """The ``gelu_quant`` op it calls (None: standard ops only)."""
    spec: GeluApprox
    mode: Literal["float", "qdq"]
    range: tuple[float, float] | None
    range_source: str
    output_tensor: str | None
    """The float tensor the site's value ends up in (QDQ sites: None when only codes remain)."""
    quantized_output: dict[str, Any] | None = None
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    takes_over: set[str] = field(default_factory=set)
    """Existing tensors the new nodes write (their readers stay connected)."""
    code_container: str | None = None
    """Low-bit table codes: the element type holding them (int4, uint4, int8, uint8)."""


class _Emit:
    """Appends the new nodes and initializers of one rewrite, each with a fresh name."""

    def __init__(self, rw: Rewrite, ctx: SiteContext) -> None:
        self.rw, self.ctx = rw, ctx
        self.prefix = f"{rw.site.id}_gq"

    def name(self, base: str) -> str:
        return self.ctx.new_name(f"{self.prefix}_{base}")

    def init(self, base: str, value: Any, dtype: Any) -> str:
        name = self.name(base)
        self.rw.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(
        self, op_type: str, inputs: list[str], base: str, out: str | None = None, **attrs: Any
    ) -> str:
        y = out if out is not None else self.name(base)
        self.rw.nodes.append(
            helper.make_node(op_type, inputs, [y], name=self.name(op_type), **attrs)
        )
        if out is not None:
            self.rw.takes_over.add(out)
        return y

    def clip_codes(self, codes: str, qp: QParams) -> str:
        """``Clip`` 8-bit-container ``codes`` to the low-bit code range of ``qp``."""
        lo = self.init("in_qmin", qp.qmin, qp.np_dtype)
        hi = self.init("in_qmax", qp.qmax, qp.np_dtype)
        return self.node("Clip", [codes, lo, hi], "codes_clipped")

    def custom(self, x: str, out: str | None = None, base: str = "y") -> str:
        y = out if out is not None else self.name(base)
        op = self.rw.op
        assert op is not None
        self.rw.nodes.append(op.node(x, y, self.name(op.kind)))
        if out is not None:
            self.rw.takes_over.add(out)
        return y

    def protos(self, nodes: list[onnx.NodeProto]) -> None:
        """Nodes written with their own (prefixed) tensor names: give each a fresh node name."""
        for n in nodes:
            n.name = self.name(n.op_type)
            self.rw.nodes.append(n)

    def to_site_dtype(self, y: str, y_type: int) -> None:
        """Write ``y`` into the site's output tensor, with a ``Cast`` when the types differ."""
        site = self.rw.site
        if y_type == onnx_type(site.dtype):
            self.rw.nodes[-1].output[0] = site.output
            self.rw.takes_over.add(site.output)
        else:
            self.node("Cast", [y], "", out=site.output, to=onnx_type(site.dtype))


def _float_range(site: GeluSite, ctx: SiteContext) -> tuple[tuple[float, float], str]:
    """The site's input range and where it came from."""
    t = ctx.target
    if ctx.ranges is not None:
        # low-bit tables: ranges chosen for their own code widths, and their tail cut there
        ib, ob = low_bits(t) if t.kind == "lut" else (None, None)
        try:
            rng = ctx.ranges.range_for(site.id, ctx.method, bits=ib or 8, out_bits=ob or 8)
        except BadInputError as e:  # e.g. a site the calibrator skipped: skip it too
            raise ModelError(str(e)) from None
        source = f"ranges:{ctx.method or 'chosen'}"
        if (ib or ob) and ctx.ranges.method_of(site.id, ctx.method) in ("entropy", "mse"):
            source += f" at {ib or 8}/{ob or 8}-bit codes"
        if (
            ctx.tail_cut
            and t.kind in ("lut", "interp", "standard")
            and t.in_dtype in ("int8", "uint8")
        ):
            in_dt: Any = t.in_dtype
            out_dt: Any = t.out_dtype or "int8"
            cut = cut_range(
                *rng, in_dtype=in_dt, out_dtype=out_dt, form=ctx.form, in_bits=ib, out_bits=ob
            )
            if cut != rng:
                rng, source = cut, source + ", tail cut"
        return rng, source
    if ctx.range is not None:
        return ctx.range, "--range"
    raise BadInputError(
        f"site {site.id} is a float site and needs a range: pass --range LO HI or "
        "--ranges RANGES.json"
    )


def _check_float_site(site: GeluSite, ctx: SiteContext) -> None:
    if ctx.target.kind != "poly" and site.dtype not in ("float32", "float16"):
        raise ModelError(f"site dtype {site.dtype} is not float32 or float16")
    t = ctx.target
    if t.kind in ("lut", "interp") and "int16" in (t.in_dtype, t.out_dtype) and ctx.opset < 21:
        raise ModelError(
            f"int16 QuantizeLinear/DequantizeLinear need opset 21; the model imports "
            f"{ctx.opset} (convert it with onnx.version_converter, or use an 8-bit target)"
        )


def _qdq_qparams(site: GeluSite) -> tuple[QParams, QParams]:
    """The qparams of a QDQ site's DequantizeLinear (input) and QuantizeLinear (output)."""
    qin, qout = site.qdq_in, site.qdq_out
    assert qin is not None and qout is not None
    in_qp = QParams(qin.scale, qin.zero_point, qin.dtype, qin.bits)  # type: ignore[arg-type]
    out_qp = QParams(qout.scale, qout.zero_point, qout.dtype, qout.bits)  # type: ignore[arg-type]
    return in_qp, out_qp


def _biased_input(e: _Emit) -> str:
    site = e.rw.site
    return site.input if site.bias is None else e.node("Add", [site.input, site.bias], "biased")


def _collapsed_nodes(site: GeluSite, ctx: SiteContext, dq: str, q: str) -> set[str]:
    """The nodes a QDQ collapse removes: the site's, its Q, and its DQ unless something else
    reads the DQ's output (both must be main-graph nodes)."""
    ctx.output_of(q)
    remove = set(site.nodes) | {q}
    if not ctx.still_read(ctx.output_of(dq), remove):
        remove.add(dq)
    return remove


class QdqCollapse:
    """``DequantizeLinear -> GELU -> QuantizeLinear`` of a QDQ model -> one op on the codes."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return (
            ctx.target.kind in ("lut", "interp")
            and site.qdq_in is not None
            and site.qdq_out is not None
            and site.bias is None
        )

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        qin, qout = site.qdq_in, site.qdq_out
        assert qin is not None and qout is not None
        in_qp, out_qp = _qdq_qparams(site)
        spec = build_spec(ctx.target, ctx.form, in_qparams=in_qp, out_qparams=out_qp)
        op = custom_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        remove = _collapsed_nodes(site, ctx, qin.node, qout.node)
        out_q = {
            "tensor": qout.tensor,
            "scale": qout.scale,
            "zero_point": qout.zero_point,
            "dtype": qout.dtype,
        }
        rw = Rewrite(site, remove, op, spec, "qdq", None, "qdq", None, out_q)
        e = _Emit(rw, ctx)
        e.custom(qin.tensor, out=qout.tensor)
        if ctx.still_read(site.output, remove):  # the float value is read elsewhere too
            if site.dtype == "float16":
                raise ModelError("float16 QDQ site whose float output is read elsewhere")
            s = e.init("out_scale", qout.scale, np.float32)
            z = e.init("out_zero_point", qout.zero_point, out_qp.np_dtype)
            rw.output_tensor = e.node("DequantizeLinear", [qout.tensor, s, z], "", out=site.output)
        return rw


class QdqGroupedCollapse:
    """Per-axis ``DequantizeLinear -> GELU -> QuantizeLinear`` (one scale and zero point per
    channel of the last axis) -> one grouped-table op on the codes, a table per group of channels
    with equal qparams (:mod:`gelu_quant.graph.axis_groups`)."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return (
            ctx.target.kind == "lut"
            and site.qdq_in_axis is not None
            and site.qdq_out_axis is not None
            and site.bias is None
        )

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        qin, qout = site.qdq_in_axis, site.qdq_out_axis
        assert qin is not None and qout is not None
        channels = site.shape[-1] if site.shape else None
        spec = axis_grouped_spec(qin, qout, ctx.form, channels)
        op = custom_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        remove = _collapsed_nodes(site, ctx, qin.node, qout.node)
        # discovery took the Q as the GELU's only reader: no float output remains
        rw = Rewrite(site, remove, op, spec, "qdq", None, "qdq", None)
        _Emit(rw, ctx).custom(qin.tensor, out=qout.tensor)
        return rw


class FloatTable:
    """A float site -> ``QuantizeLinear -> table op -> DequantizeLinear`` (one table)."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return ctx.target.kind in ("lut", "interp") and ctx.groups == 1

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        _check_float_site(site, ctx)
        rng, source = _float_range(site, ctx)
        spec: Any = build_spec(ctx.target, ctx.form, in_range=rng)
        op = custom_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        rw = Rewrite(site, set(site.nodes), op, spec, "float", rng, source, site.output)
        e = _Emit(rw, ctx)
        x = _biased_input(e)
        if site.dtype != "float32":
            x = e.node("Cast", [x], "x_f32", to=TensorProto.FLOAT)
        qp = spec.in_qparams
        s = e.init("in_scale", qp.scale, np.float32)
        z = e.init("in_zero_point", qp.zero_point, qp.np_dtype)
        codes = e.node("QuantizeLinear", [x, s, z], "codes")
        if qp.code_bits is not None:  # low-bit codes: saturate to their range
            rw.code_container = qp.dtype
            codes = e.clip_codes(codes, qp)
        oq: QParams | None = spec.out_qparams
        if oq is None:  # float-output table
            e.to_site_dtype(e.custom(codes), op.output_type)
            return rw
        y = e.custom(codes, base="out_codes")
        s = e.init("out_scale", oq.scale, np.float32)
        z = e.init("out_zero_point", oq.zero_point, oq.np_dtype)
        if site.dtype == "float32":
            e.node("DequantizeLinear", [y, s, z], "", out=site.output)
        else:
            f = e.node("DequantizeLinear", [y, s, z], "y_f32")
            e.node("Cast", [f], "", out=site.output, to=onnx_type(site.dtype))
        return rw


class FourBitFloatTable:
    """A float site whose table codes have at most 4 bits, at opset >= 21 -> ``QuantizeLinear``
    (INT4/UINT4 zero point) -> table op on 4-bit tensors -> ``DequantizeLinear``; codes narrower
    than 4 bits are quantized and clipped in the 8-bit container first, then ``Cast`` (exact).
    With ``--code-container auto`` a table that cannot be stored so falls back to
    :class:`FloatTable`'s 8-bit container."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return (
            ctx.groups == 1
            and four_bit_target(ctx.target)
            and (ctx.code_container == "int4" or (ctx.code_container == "auto" and ctx.opset >= 21))
        )

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        _check_float_site(site, ctx)
        rng, source = _float_range(site, ctx)
        spec: Any = build_spec(ctx.target, ctx.form, in_range=rng)
        try:
            op = int4_lut_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        except SpecError as err:
            if ctx.code_container == "int4":
                raise
            rw = FloatTable.rewrite(site, ctx)
            assert rw.op is not None
            note = f"INT4/UINT4 storage refused ({err}): 8-bit container"
            rw.op = dataclasses.replace(rw.op, notes=(*rw.op.notes, note))
            return rw
        rw = Rewrite(site, set(site.nodes), op, spec, "float", rng, source, site.output)
        rw.code_container = type_name(op.input_type)
        e = _Emit(rw, ctx)
        x = _biased_input(e)
        if site.dtype != "float32":
            x = e.node("Cast", [x], "x_f32", to=TensorProto.FLOAT)
        qp, oq = spec.in_qparams, spec.out_qparams
        s = e.init("in_scale", qp.scale, np.float32)
        if is_full_four_bit(qp):  # QuantizeLinear saturates to the code range itself
            z = e.name("in_zero_point")
            rw.initializers.append(four_bit_tensor(z, qp.zero_point, four_bit_type(qp)))
            codes = e.node("QuantizeLinear", [x, s, z], "codes")
        else:
            z = e.init("in_zero_point", qp.zero_point, qp.np_dtype)
            codes = e.clip_codes(e.node("QuantizeLinear", [x, s, z], "codes"), qp)
            codes = e.node("Cast", [codes], "codes_4bit", to=four_bit_type(qp))
        y = e.custom(codes, base="out_codes")
        s = e.init("out_scale", oq.scale, np.float32)
        z = e.name("out_zero_point")
        rw.initializers.append(four_bit_tensor(z, oq.zero_point, four_bit_type(oq)))
        if site.dtype == "float32":
            e.node("DequantizeLinear", [y, s, z], "", out=site.output)
        else:
            f = e.node("DequantizeLinear", [y, s, z], "y_f32")
            e.node("Cast", [f], "", out=site.output, to=onnx_type(site.dtype))
        return rw


class GroupedFloatTable:
    """A float site -> per-channel quantize -> grouped tables -> per-channel dequantize."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return ctx.target.kind == "lut" and ctx.groups > 1

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        _check_float_site(site, ctx)
        _float_range(site, ctx)  # the same refusals as one table (a site the calibrator skipped)
        assert ctx.ranges is not None
        ch = ctx.ranges.channel_ranges_for(site.id)
        ranges, method = ctx.ranges, ctx.group_method
        ib, ob = low_bits(ctx.target)
        spec = grouped_spec(
            site,
            ctx.target,
            ctx.form,
            ch,
            ctx.groups,
            None
            if method == "minmax"
            else lambda m: ranges.group_range_for(site.id, m, method, ctx.form, ib or 8, ob or 8),
        )
        op = custom_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        source = f"ranges:per-group {method}, tail cut"
        if (ib or ob) and method in ("entropy", "mse"):
            source += f", at {ib or 8}/{ob or 8}-bit codes"
        rw = Rewrite(site, set(site.nodes), op, spec, "float", spec.domain, source, site.output)
        e = _Emit(rw, ctx)
        x = _biased_input(e)
        if site.dtype != "float32":
            x = e.node("Cast", [x], "x_f32", to=TensorProto.FLOAT)
        qps = [g.in_qparams for g in spec.groups]
        s = e.init("in_scale", _per_channel(spec, [q.scale for q in qps]), np.float32)
        z = e.init("in_zero_point", _per_channel(spec, [q.zero_point for q in qps]), np.float32)
        codes = e.name("codes")
        p_in = e.name("quant") + "_"
        e.protos(quantize_per_channel(x, s, z, codes, qps[0].np_dtype, prefix=p_in))
        if qps[0].code_bits is not None:  # low-bit codes (every group the same width)
            rw.code_container = qps[0].dtype
            codes = e.clip_codes(codes, qps[0])
        y = e.custom(codes, base="out_codes")
        oqs = [g.out_qparams for g in spec.groups if g.out_qparams is not None]
        if not oqs:  # float-output tables
            e.to_site_dtype(y, op.output_type)
            return rw
        s = e.init("out_scale", _per_channel(spec, [q.scale for q in oqs]), np.float32)
        z = e.init("out_zero_point", _per_channel(spec, [q.zero_point for q in oqs]), np.float32)
        out = site.output if site.dtype == "float32" else e.name("y_f32")
        p_out = e.name("dequant") + "_"
        e.protos(dequantize_per_channel(y, s, z, out, prefix=p_out))
        if site.dtype == "float32":
            rw.takes_over.add(out)
        else:
            e.node("Cast", [out], "", out=site.output, to=onnx_type(site.dtype))
        return rw


class FloatOp:
    """A float site -> the op on the tensor itself (polynomials, float baselines)."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return ctx.target.kind in ("poly", "baseline")

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        _check_float_site(site, ctx)
        rng, source = _float_range(site, ctx)
        spec = build_spec(
            ctx.target,
            ctx.form,
            in_range=rng,
            poly_segments=ctx.poly_segments,
            poly_degree=ctx.poly_degree,
        )
        op = custom_op(spec, opset=ctx.opset, lut_body=ctx.lut_body, verify=ctx.verify)
        rw = Rewrite(site, set(site.nodes), op, spec, "float", rng, source, site.output)
        e = _Emit(rw, ctx)
        x = _biased_input(e)
        if op.input_type != onnx_type(site.dtype):
            x = e.node("Cast", [x], "x_io", to=op.input_type)
            y = e.custom(x)
            e.node("Cast", [y], "", out=site.output, to=onnx_type(site.dtype))
        else:
            e.custom(x, out=site.output)
        return rw


class StandardOps:
    """A site -> standard ops vendor compilers fuse: ``QuantizeLinear -> DequantizeLinear ->
    Gelu -> QuantizeLinear -> DequantizeLinear`` with the calibrated qparams as they are (no
    nudged scales; ``approximate="tanh"`` for tanh sites; QuickGELU as ``x·Sigmoid(1.702x)``).
    QDQ sites keep their own Q/DQ: only the GELU between them becomes the ``Gelu`` op. Needs
    opset 20 (:func:`gelu_quant.graph.convert.convert_model` upgrades the model first)."""

    @staticmethod
    def applies(site: GeluSite, ctx: SiteContext) -> bool:
        return ctx.target.kind == "standard"

    @staticmethod
    def rewrite(site: GeluSite, ctx: SiteContext) -> Rewrite:
        if ctx.opset < 20:
            raise ModelError(f"the Gelu op needs opset 20; the model imports {ctx.opset}")
        qdq = site.qdq_in is not None and site.qdq_out is not None and site.bias is None
        if qdq:
            in_qp, out_qp = _qdq_qparams(site)
            spec: Any = build_spec(ctx.target, ctx.form, in_qparams=in_qp, out_qparams=out_qp)
            rw = Rewrite(site, set(site.nodes), None, spec, "qdq", None, "qdq", site.output)
            e = _Emit(rw, ctx)
            if site.dtype != "float32":
                raise ModelError("standard-op output of a float16 QDQ site is not supported")
            _gelu_ops(e, site.input, site.output, ctx.form)
            return rw
        _check_float_site(site, ctx)
        rng, source = _float_range(site, ctx)
        spec = build_spec(ctx.target, ctx.form, in_range=rng)
        rw = Rewrite(site, set(site.nodes), None, spec, "float", rng, source, site.output)
        e = _Emit(rw, ctx)
        x = _biased_input(e)
        if site.dtype != "float32":
            x = e.node("Cast", [x], "x_f32", to=TensorProto.FLOAT)
        qp, oq = spec.in_qparams, spec.out_qparams
        s = e.init("in_scale", qp.scale, np.float32)
        z = e.init("in_zero_point", qp.zero_point, qp.np_dtype)
        codes = e.node("QuantizeLinear", [x, s, z], "codes")
        xq = e.node("DequantizeLinear", [codes, s, z], "x_q")
        g = _gelu_ops(e, xq, None, ctx.form)
        so = e.init("out_scale", oq.scale, np.float32)
        zo = e.init("out_zero_point", oq.zero_point, oq.np_dtype)
        y = e.node("QuantizeLinear", [g, so, zo], "out_codes")
        if site.dtype == "float32":
            e.node("DequantizeLinear", [y, so, zo], "", out=site.output)
        else:
            f = e.node("DequantizeLinear", [y, so, zo], "y_f32")
            e.node("Cast", [f], "", out=site.output, to=onnx_type(site.dtype))
        return rw


def _gelu_ops(e: _Emit, x: str, out: str | None, form: GeluForm) -> str:
    """GELU of ``x`` in standard ops: the ``Gelu`` op, or ``x·Sigmoid(1.702x)`` for QuickGELU."""
    if form == "quick":
        a = e.init("alpha", QUICK_ALPHA, np.float32)
        z = e.node("Mul", [x, a], "z")
        sig = e.node("Sigmoid", [z], "sig")
        return e.node("Mul", [x, sig], "gelu", out=out)
    approximate = "tanh" if form == "tanh" else "none"
    return e.node("Gelu", [x], "gelu", out=out, approximate=approximate)


RULES = (
    StandardOps,
    QdqGroupedCollapse,
    QdqCollapse,
    FourBitFloatTable,
    FloatTable,
    GroupedFloatTable,
    FloatOp,
)
"""In order: the first rule that applies to a site rewrites it."""


def rewrite_site(site: GeluSite, ctx: SiteContext) -> Rewrite:
    """The rewrite of ``site`` (raises SpecError/ModelError/BadInputError to skip it)."""
    for rule in RULES:
        if rule.applies(site, ctx):
            return rule.rewrite(site, ctx)
    raise ModelError(f"no rewrite for target kind {ctx.target.kind!r} with --groups {ctx.groups}")


def _per_channel(spec: GroupedLutSpec, per_group: list[Any]) -> np.ndarray:
    """A per-group value repeated for every channel of its group (per-axis Q/DQ parameters)."""
    return np.asarray(per_group)[spec.channel_group]
