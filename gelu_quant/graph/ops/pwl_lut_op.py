"""``GeluPwlLut``: the ONNX op of a :class:`~gelu_quant.lut.pwl.PwlLutSpec`.

Input ``X`` holds int8/uint8/int16 codes, output ``Y`` int8/uint8/int16 codes. Attributes carry
the spec for a vendor compiler's small lookup unit: ``starts``, ``bases``, ``slopes`` (int32
tensors, one entry per segment), ``shift``, ``segments``, the input and output qparams
(``in_scale``, ``in_zero_point``, ``out_scale``, ``out_zero_point``) and ``form``.

Bodies (``lut_body``):

* ``int32`` (``auto`` / ``formula``): the spec's integer arithmetic in standard ONNX ops on the
  flattened codes. Segment index ``k`` by one ``GreaterOrEqual`` per inner breakpoint (up to 16
  segments) or a branchless binary search over the breakpoints padded with ``INT32_MAX`` to
  ``2**r - 1`` entries (``r`` rounds of ``GatherElements`` + ``GreaterOrEqual``); the segment's
  start, base and slope by ``GatherElements``; ``acc = base + (q - start) * slope`` in int32;
  ``acc >> shift`` as ``(acc - Mod(acc, 2**shift)) / 2**shift`` (``Mod`` with ``fmod=0`` takes
  the divisor's sign, so the division is exact: a floor); ``Clip`` to the output codes, ``Cast``;
* ``gather-elements`` / ``gather``: the equivalent full table (every input code's output) as for
  interpolated tables -- the speed of a table in ONNX Runtime, the attributes unchanged.

Every body is run on every input code (at every position modulo 16) in ONNX Runtime and
``onnx.reference`` at build time and must reproduce :meth:`PwlLutSpec.lookup` exactly.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import const, tensor_attr
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.graph.ops.lut_op import gather_body, gather_elements_body
from gelu_quant.graph.ops.op_runners import verify_on_all_codes
from gelu_quant.lut.pwl import PwlLutSpec

KIND = "GeluPwlLut"
LINEAR_SEARCH_SEGMENTS = 16
"""Up to this many segments the body finds a segment by one comparison per inner breakpoint."""
_INT32_MAX = 2**31 - 1


def _attributes(spec: PwlLutSpec) -> tuple[onnx.AttributeProto, ...]:
    qp, oq = spec.in_qparams, spec.out_qparams
    return (
        tensor_attr("starts", spec.starts),
        tensor_attr("bases", spec.bases),
        tensor_attr("slopes", spec.slopes),
        helper.make_attribute("shift", int(spec.shift)),
        helper.make_attribute("segments", int(spec.segments)),
        helper.make_attribute("in_scale", float(qp.scale)),
        helper.make_attribute("in_zero_point", int(qp.zero_point)),
        helper.make_attribute("out_scale", float(oq.scale)),
        helper.make_attribute("out_zero_point", int(oq.zero_point)),
        helper.make_attribute("form", spec.form),
    )


def _segment_index(spec: PwlLutSpec) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing ``k`` (int32, the segment of each code of ``q``) and its name."""
    inner = [int(v) for v in spec.starts[1:]]
    if not inner:
        return [], ""
    nodes: list[onnx.NodeProto] = []
    if len(inner) < LINEAR_SEARCH_SEGMENTS:
        # k = number of inner breakpoints <= q
        for j, b in enumerate(inner, start=1):
            nodes += [
                const(f"s{j}", np.int32(b)),
                helper.make_node("GreaterOrEqual", ["q", f"s{j}"], [f"ge{j}"]),
                helper.make_node("Cast", [f"ge{j}"], [f"ge{j}_i"], to=TensorProto.INT32),
            ]
            if j > 1:
                prev = "ge1_i" if j == 2 else f"k{j - 1}"
                nodes.append(helper.make_node("Add", [prev, f"ge{j}_i"], [f"k{j}"]))
        return nodes, "ge1_i" if len(inner) == 1 else f"k{len(inner)}"
    # branchless binary search: pos += step * (q >= B[pos + step - 1]) for step = 2^(r-1) .. 1
    r = max(1, math.ceil(math.log2(len(inner) + 1)))
    table = np.full((1 << r) - 1, _INT32_MAX, np.int32)
    table[: len(inner)] = inner
    nodes += [
        const("bp_table", table),
        helper.make_node("Shape", ["q"], ["flat_shape"]),
        const("zero_i", np.zeros(1, np.int32)),
        helper.make_node("Expand", ["zero_i", "flat_shape"], ["pos0"]),
    ]
    pos, step, i = "pos0", 1 << (r - 1), 0
    while step >= 1:
        i += 1
        nodes += [
            const(f"step{i}", np.int32(step)),
            const(f"probe_off{i}", np.int32(step - 1)),
            helper.make_node("Add", [pos, f"probe_off{i}"], [f"probe{i}"]),
            helper.make_node("GatherElements", ["bp_table", f"probe{i}"], [f"b{i}"], axis=0),
            helper.make_node("GreaterOrEqual", ["q", f"b{i}"], [f"ge{i}"]),
            helper.make_node("Cast", [f"ge{i}"], [f"ge{i}_i"], to=TensorProto.INT32),
            helper.make_node("Mul", [f"ge{i}_i", f"step{i}"], [f"inc{i}"]),
            helper.make_node("Add", [pos, f"inc{i}"], [f"pos{i}"]),
        ]
        pos, step = f"pos{i}", step // 2
    return nodes, pos


def int32_body(spec: PwlLutSpec) -> list[onnx.NodeProto]:
    """The spec's integer arithmetic (:meth:`PwlLutSpec.lookup`) in standard ONNX int32 ops."""
    oq = spec.out_qparams
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        const("minus1", [-1], np.int64),
        helper.make_node("Reshape", ["X", "minus1"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["q"], to=TensorProto.INT32),
    ]
    index_nodes, k = _segment_index(spec)
    nodes += index_nodes
    if k:
        for name in ("starts", "bases", "slopes"):
            nodes += [
                const(f"{name}_table", np.ascontiguousarray(getattr(spec, name))),
                helper.make_node("GatherElements", [f"{name}_table", k], [name[:-1]], axis=0),
            ]
    else:  # one segment: scalars broadcast
        nodes += [
            const("start", np.int32(spec.starts[0])),
            const("base", np.int32(spec.bases[0])),
            const("slope", np.int32(spec.slopes[0])),
        ]
    nodes += [
        helper.make_node("Sub", ["q", "start"], ["d"]),
        helper.make_node("Mul", ["d", "slope"], ["dm"]),
        helper.make_node("Add", ["base", "dm"], ["acc"]),
    ]
    y = "acc"
    if spec.shift:
        nodes += [
            const("pow2", np.int32(1 << spec.shift)),
            helper.make_node("Mod", ["acc", "pow2"], ["rem"], fmod=0),
            helper.make_node("Sub", ["acc", "rem"], ["floored"]),
            helper.make_node("Div", ["floored", "pow2"], ["shifted"]),
        ]
        y = "shifted"
    nodes += [
        const("out_qmin", np.int32(oq.qmin)),
        const("out_qmax", np.int32(oq.qmax)),
        helper.make_node("Clip", [y, "out_qmin", "out_qmax"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["y"], to=onnx_type(oq.np_dtype)),
        helper.make_node("Reshape", ["y", "shape"], ["Y"]),
    ]
    return nodes


@register_body(PwlLutSpec)
def pwl_lut_op(
    spec: PwlLutSpec, *, opset: int, lut_body: LutBody = "auto", verify: bool = True
) -> CustomOp:
    """The op for a PWL spec: the int32 body (``auto`` / ``formula``) or the equivalent table
    (``gather-elements`` / ``gather``), proved equal to the spec on every code when ``verify``."""
    qp, oq = spec.in_qparams, spec.out_qparams
    in_t, out_t = onnx_type(qp.np_dtype), onnx_type(oq.np_dtype)
    attrs = _attributes(spec)
    if lut_body == "gather":
        kind, body = "gather", tuple(gather_body(spec.full_table(), qp.qmin))
    elif lut_body == "gather-elements":
        kind, body = "gather-elements", tuple(gather_elements_body(spec.full_table(), qp.qmin))
    else:
        kind, body = "int32", tuple(int32_body(spec))
    op = CustomOp(KIND, attrs, body, opset, in_t, out_t, kind)
    if verify:
        problem = verify_on_all_codes(op, qp.codes(), spec.full_table())
        if problem:
            raise SpecError(f"the {kind} body of the PWL table differs from its spec: {problem}")
    return op
