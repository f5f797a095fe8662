"""``GeluGroupedLut``: the ONNX op of a :class:`~gelu_quant.lut.grouped.GroupedLutSpec`.

Input ``X`` holds int8/uint8 codes whose last axis is the spec's channels, each channel in its
group's input code space; output ``Y`` the output codes (or float16/float32 values), each channel
in its group's output code space. In a float model the converter puts a per-channel
quantize before it and a per-channel dequantize after it (the groups' qparams expanded to
channels, spelled as :func:`quantize_per_channel` / :func:`dequantize_per_channel`).

Attributes carry the spec for a vendor compiler: ``tables`` (K x entries), ``channel_group``,
per-group ``in_scales`` / ``in_zero_points`` / ``out_scales`` / ``out_zero_points``,
``out_dtype``, ``form``. Bodies, as for one table (see :mod:`gelu_quant.graph.ops`):

* ``formula``: per-channel dequantize -> ``Gelu`` -> per-channel quantize (spelled with
  broadcast arithmetic, :func:`quantize_per_channel`: ORT's per-axis Q/DQ kernels are ~18x
  slower) with per-channel scales (opset >= 20; ``Cast -> Mul -> Sub`` and the spelled-out
  formula before), each group's scales nudged until every code of the group provably lands on
  its entry, then run on every code of every channel in ORT and onnx.reference at build time;
* ``gather-elements``: index = code + 256·group (per channel), one ``GatherElements`` on the
  flattened tables — any tables; the ``auto`` body (faster in ORT than the formula: one
  elementwise pass and a lookup where the formula takes eight).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import const
from gelu_quant.graph.ops.custom_op import DOMAIN, CustomOp, onnx_type, register_body
from gelu_quant.graph.ops.formula_proof import FormulaFit, fit_formula, gelu_formula_nodes
from gelu_quant.graph.ops.op_runners import position_probe, run_ort, run_reference
from gelu_quant.lut.grouped import GroupedLutSpec

KIND = "GeluGroupedLut"


def _attributes(spec: GroupedLutSpec) -> tuple[onnx.AttributeProto, ...]:
    a = spec.arrays()
    attrs = [
        helper.make_attribute("tables", numpy_helper.from_array(a["tables"], "tables")),
        helper.make_attribute(
            "channel_group", numpy_helper.from_array(spec.channel_group, "channel_group")
        ),
        helper.make_attribute("in_scales", [float(g.in_qparams.scale) for g in spec.groups]),
        helper.make_attribute(
            "in_zero_points", [int(g.in_qparams.zero_point) for g in spec.groups]
        ),
        helper.make_attribute("out_dtype", spec.groups[0].out_dtype),
        helper.make_attribute("form", spec.form),
    ]
    if spec.groups[0].out_qparams is not None:
        oqs = [g.out_qparams for g in spec.groups if g.out_qparams is not None]
        attrs += [
            helper.make_attribute("out_scales", [float(q.scale) for q in oqs]),
            helper.make_attribute("out_zero_points", [int(q.zero_point) for q in oqs]),
        ]
    return tuple(attrs)


def quantize_per_channel(
    x: str, scale: str, zero_point_f: str, y: str, dtype: Any, prefix: str = ""
) -> list[onnx.NodeProto]:
    """Per-channel QuantizeLinear of float32 ``x`` spelled ``Div → Round → Add → QuantizeLinear(1,
    0)``: ``saturate(round_half_even(x / scale) + zp)``, exactly ONNX's QuantizeLinear (the zero
    point is added to an integer-valued float, exact; the per-tensor ``QuantizeLinear`` with scale
    1 and zero point 0 of an integer-valued float is its saturating cast), with per-channel
    ``scale`` and float zero points broadcast on the last axis. ORT runs this 18× faster than a
    per-axis QuantizeLinear (0.24 vs 4.2 ms for 128 × 1536 values, one thread); the final
    per-tensor QuantizeLinear is one kernel where ``Clip → Cast`` were two."""
    p = prefix
    return [
        helper.make_node("Div", [x, scale], [f"{p}q_div"]),
        helper.make_node("Round", [f"{p}q_div"], [f"{p}q_round"]),
        helper.make_node("Add", [f"{p}q_round", zero_point_f], [f"{p}q_shift"]),
        *saturate_cast(f"{p}q_shift", y, dtype, prefix=p),
    ]


def saturate_cast(x: str, y: str, dtype: Any, prefix: str = "") -> list[onnx.NodeProto]:
    """``y = saturate(round_half_even(x))`` to int8/uint8 ``dtype``: a per-tensor QuantizeLinear
    with scale 1 and zero point 0 (``x / 1`` is exact), one kernel for ``Round → Clip → Cast``."""
    return [
        const(f"{prefix}q_one", 1.0, np.float32),
        const(f"{prefix}q_zero", np.zeros((), dtype)),
        helper.make_node("QuantizeLinear", [x, f"{prefix}q_one", f"{prefix}q_zero"], [y]),
    ]


def dequantize_per_channel(
    q: str, scale: str, zero_point_f: str, y: str, prefix: str = ""
) -> list[onnx.NodeProto]:
    """Per-channel DequantizeLinear spelled ``Cast → Sub → Mul``: ``(q − zp)·scale`` with one
    rounding (the subtraction of two small integers is exact in float32), as ONNX defines it."""
    p = prefix
    return [
        helper.make_node("Cast", [q], [f"{p}dq_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", [f"{p}dq_f", zero_point_f], [f"{p}dq_c"]),
        helper.make_node("Mul", [f"{p}dq_c", scale], [y]),
    ]


def _per_channel(spec: GroupedLutSpec, per_group: list[Any], dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(per_group, dtype=dtype)[spec.channel_group]


def formula_body(spec: GroupedLutSpec, fits: list[FormulaFit], opset: int) -> list[onnx.NodeProto]:
    """The per-axis DQ -> GELU -> Q body with each group's proven scales, expanded to channels."""
    g0 = spec.groups[0]
    in_np = g0.in_qparams.np_dtype
    in_scale = _per_channel(spec, [f.in_scale for f in fits], np.float32)
    in_zp = _per_channel(spec, [g.in_qparams.zero_point for g in spec.groups], in_np)
    if opset >= 20:
        nodes = [
            const("in_scale", in_scale),
            const("in_zero_point", in_zp.astype(np.float32)),
            *dequantize_per_channel("X", "in_scale", "in_zero_point", "x"),
            helper.make_node(
                "Gelu", ["x"], ["g"], approximate="none" if spec.form == "exact" else "tanh"
            ),
        ]
    else:  # x = float(q)·s − float(zp·s) per channel, as dequantize_mul_sub models it
        offset = (in_zp.astype(np.float64) * in_scale.astype(np.float64)).astype(np.float32)
        nodes = [
            helper.make_node("Cast", ["X"], ["q"], to=TensorProto.FLOAT),
            const("in_scale", in_scale),
            const("in_offset", offset),
            helper.make_node("Mul", ["q", "in_scale"], ["qs"]),
            helper.make_node("Sub", ["qs", "in_offset"], ["x"]),
            *gelu_formula_nodes("x", "g", spec.form),
        ]
    if g0.out_qparams is None:
        nodes.append(helper.make_node("Cast", ["g"], ["Y"], to=onnx_type(g0.out_dtype)))
        return nodes
    out_np = g0.out_qparams.np_dtype
    out_scale = _per_channel(spec, [f.out_scale for f in fits], np.float32)
    out_zp = _per_channel(
        spec, [g.out_qparams.zero_point for g in spec.groups if g.out_qparams], out_np
    )
    nodes += [
        const("out_scale", out_scale),
        const("out_zero_point", out_zp.astype(np.float32)),
        *quantize_per_channel("g", "out_scale", "out_zero_point", "Y", out_np),
    ]
    return nodes


def gather_elements_body(spec: GroupedLutSpec) -> list[onnx.NodeProto]:
    """``Y[..., c] = tables[group[c], X[..., c] - qmin]`` by one GatherElements on flat tables."""
    tables = spec.arrays()["tables"]
    n = tables.shape[1]
    qmin = spec.groups[0].in_qparams.qmin
    offset = (spec.channel_group * n - qmin).astype(np.int32)
    return [
        const("tables", np.ascontiguousarray(tables).reshape(-1)),
        const("offset", offset),
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Cast", ["X"], ["code"], to=TensorProto.INT32),
        helper.make_node("Add", ["code", "offset"], ["index2d"]),
        const("minus1", [-1], np.int64),
        helper.make_node("Reshape", ["index2d", "minus1"], ["index"]),
        helper.make_node("GatherElements", ["tables", "index"], ["y"], axis=0),
        helper.make_node("Reshape", ["y", "shape"], ["Y"]),
    ]


def channel_model(op: CustomOp, channels: int) -> onnx.ModelProto:
    """A model with one input ``x`` of shape ``[N, channels]`` and the op (checks and tests)."""
    g = helper.make_graph(
        [op.node("x", "y", "op")],
        "gelu_quant_grouped_op",
        [helper.make_tensor_value_info("x", op.input_type, [None, channels])],
        [helper.make_tensor_value_info("y", op.output_type, [None, channels])],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", op.opset), helper.make_opsetid(DOMAIN, 1)],
        functions=[op.function()],
    )
    m.ir_version = 10
    return m


def all_codes_probe(spec: GroupedLutSpec) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Every input code of every channel at every position modulo 16 of the flattened tensor
    (vectorised kernels treat a block's tail differently), plus a ragged tail, and the expected
    outputs.

    Narrow tensors repeat :func:`position_probe`'s shifted code list down every column. For a
    channel count that is a multiple of 16 (transformer widths) a cheaper probe does the same:
    row ``r`` of column ``c`` holds code ``qmin + (r + c) mod n``, so each channel sees all its
    ``n`` codes and code ``k`` of channel ``c`` sits at flattened position ``≡ c (mod 16)``.
    """
    qp = spec.groups[0].in_qparams
    n = qp.qmax - qp.qmin + 1
    if spec.channels % 16:
        codes, _ = position_probe(qp.codes(), qp.codes())
        x = np.repeat(codes[:, None], spec.channels, axis=1)
    else:
        rows = np.arange(n + 13)[:, None] + np.arange(spec.channels)[None, :]
        x = (qp.qmin + rows % n).astype(qp.np_dtype)
    return x, spec.lookup(x)


def verify_grouped(op: CustomOp, spec: GroupedLutSpec) -> str:
    """'' when ORT and onnx.reference give every code of every channel its table entry."""
    x, want = all_codes_probe(spec)
    problems = []
    got = run_ort(channel_model(op, spec.channels), x)
    if got.dtype != want.dtype or not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        problems.append(f"ORT differs on {int(np.sum(got != want))} codes")
    ref_op = dataclasses.replace(op, opset=max(op.opset, 21))
    got = run_reference(channel_model(ref_op, spec.channels), x)
    if got.dtype != want.dtype or not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        problems.append(f"onnx.reference differs on {int(np.sum(got != want))} codes")
    return "; ".join(problems)


@register_body(GroupedLutSpec)
def grouped_lut_op(
    spec: GroupedLutSpec, *, opset: int, lut_body: str = "auto", verify: bool = True
) -> CustomOp:
    """The op for a grouped spec. ``auto`` and ``gather-elements``: the GatherElements body, the
    faster one in ORT (``benchmarks/bench_minilm_latency.py --groups 8 --lut-bodies auto
    formula``). ``formula``: the per-channel DQ → GELU → Q body when every group's is proved,
    else refused."""
    g0 = spec.groups[0]
    if g0.in_qparams.dtype == "int16" or g0.out_dtype == "int16":
        raise SpecError("grouped tables take int8/uint8 codes (int16 tables are not grouped)")
    in_t, out_t = onnx_type(g0.in_qparams.np_dtype), onnx_type(g0.table.dtype)
    attrs = _attributes(spec)
    notes: list[str] = []
    if lut_body == "formula":
        fits = [fit_formula(g, mul_sub=opset < 20) for g in spec.groups]
        bad = [k for k, f in enumerate(fits) if f is None]
        if bad:
            notes.append(f"formula body: groups {bad} have codes on rounding boundaries")
        else:
            proven = [f for f in fits if f is not None]
            vi = (
                helper.make_tensor_value_info("X", in_t, None),
                helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
            )
            body = tuple(formula_body(spec, proven, opset))
            op = CustomOp(KIND, attrs, body, opset, in_t, out_t, "formula", (), vi)
            if any(f.nudged for f in proven):
                notes.append("formula body with nudged scales in some groups")
            problem = verify_grouped(op, spec) if verify else ""
            if not problem:
                return dataclasses.replace(op, notes=tuple(notes))
            notes.append(f"formula body rejected: {problem}")
        raise SpecError("cannot prove a formula body equal to the tables: " + "; ".join(notes))
    body = tuple(gather_elements_body(spec))
    return CustomOp(KIND, attrs, body, opset, in_t, out_t, "gather-elements", tuple(notes))
