"""``GeluLut``: the op of a :class:`~gelu_quant.lut.table.LutSpec` (one table per site): the
formula body ``DequantizeLinear -> Gelu -> QuantizeLinear`` where it is proved equal to the table,
``GatherElements`` on the flattened tensor otherwise (see :mod:`gelu_quant.graph.ops`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import const, tensor_attr
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.graph.ops.formula_proof import FormulaFit, fit_formula, gelu_formula_nodes
from gelu_quant.graph.ops.op_runners import verify_on_all_codes
from gelu_quant.lut.table import LutSpec
from gelu_quant.numerics import QUICK_ALPHA


def gather_body(table: npt.NDArray[Any], qmin: int) -> list[onnx.NodeProto]:
    """``Y = table[X - qmin]`` with ``Cast`` and ``Gather`` (negative indices wrap)."""
    data = np.roll(np.ascontiguousarray(table), qmin) if qmin else np.ascontiguousarray(table)
    return [
        const("table", data),
        helper.make_node("Cast", ["X"], ["index"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "index"], ["Y"], axis=0),
    ]


def gather_elements_body(table: npt.NDArray[Any], qmin: int) -> list[onnx.NodeProto]:
    """``Y = table[X - qmin]`` with ``GatherElements`` on the flattened input (ORT-fast)."""
    data = np.roll(np.ascontiguousarray(table), qmin) if qmin else np.ascontiguousarray(table)
    return [
        const("table", data),
        helper.make_node("Shape", ["X"], ["shape"]),
        const("minus1", [-1], np.int64),
        helper.make_node("Reshape", ["X", "minus1"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["index"], to=TensorProto.INT32),
        helper.make_node("GatherElements", ["table", "index"], ["y"], axis=0),
        helper.make_node("Reshape", ["y", "shape"], ["Y"]),
    ]


def table_body(
    table: npt.NDArray[Any], qmin: int, lut_body: LutBody
) -> tuple[str, tuple[onnx.NodeProto, ...]]:
    """The general table body: ``GatherElements`` unless ``Gather`` is asked for by name."""
    if lut_body == "gather":
        return "gather", tuple(gather_body(table, qmin))
    return "gather-elements", tuple(gather_elements_body(table, qmin))


def _lut_attributes(spec: LutSpec) -> tuple[onnx.AttributeProto, ...]:
    attrs = [
        tensor_attr("table", spec.table),
        helper.make_attribute("in_scale", float(spec.in_qparams.scale)),
        helper.make_attribute("in_zero_point", int(spec.in_qparams.zero_point)),
        helper.make_attribute("out_dtype", spec.out_dtype),
        helper.make_attribute("form", spec.form),
    ]
    if spec.out_qparams is not None:
        attrs += [
            helper.make_attribute("out_scale", float(spec.out_qparams.scale)),
            helper.make_attribute("out_zero_point", int(spec.out_qparams.zero_point)),
        ]
    # low-bit codes in an 8-bit container: their widths (absent for full-width codes)
    in_bits = spec.in_qparams.code_bits
    out_bits = None if spec.out_qparams is None else spec.out_qparams.code_bits
    if in_bits is not None:
        attrs.append(helper.make_attribute("in_bits", int(in_bits)))
    if out_bits is not None:
        attrs.append(helper.make_attribute("out_bits", int(out_bits)))
    return tuple(attrs)


def _formula_body(spec: LutSpec, fit: FormulaFit, opset: int) -> list[onnx.NodeProto]:
    qp = spec.in_qparams
    if spec.form == "quick":
        # QuickGELU at any opset: DequantizeLinear -> x * Sigmoid(1.702 x) -> QuantizeLinear
        nodes = [
            const("in_scale", fit.in_scale, np.float32),
            const("in_zero_point", qp.zero_point, qp.np_dtype),
            helper.make_node("DequantizeLinear", ["X", "in_scale", "in_zero_point"], ["x"]),
            const("alpha", QUICK_ALPHA, np.float32),
            helper.make_node("Mul", ["x", "alpha"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["sig"]),
            helper.make_node("Mul", ["x", "sig"], ["g"]),
        ]
    elif opset >= 20:  # the Gelu op: exactly the DQ -> Gelu -> Q it replaces, as fast
        approximate = "none" if spec.form == "exact" else "tanh"
        nodes = [
            const("in_scale", fit.in_scale, np.float32),
            const("in_zero_point", qp.zero_point, qp.np_dtype),
            helper.make_node("DequantizeLinear", ["X", "in_scale", "in_zero_point"], ["x"]),
            helper.make_node("Gelu", ["x"], ["g"], approximate=approximate),
        ]
    else:
        # No Gelu op before opset 20. A DequantizeLinear feeding the formula stops ORT from
        # fusing it into its Gelu kernel (and is duplicated per reader), Cast -> Mul -> Sub
        # does not: x = float(q)·s - float(zp·s), modelled exactly by dequantize_mul_sub.
        s32 = np.float32(fit.in_scale)
        nodes = [
            helper.make_node("Cast", ["X"], ["q"], to=TensorProto.FLOAT),
            const("in_scale", s32, np.float32),
            const("in_offset", np.float64(qp.zero_point) * np.float64(s32), np.float32),
            helper.make_node("Mul", ["q", "in_scale"], ["qs"]),
            helper.make_node("Sub", ["qs", "in_offset"], ["x"]),
        ]
        nodes += gelu_formula_nodes("x", "g", spec.form)
    if spec.out_qparams is None:
        nodes.append(helper.make_node("Cast", ["g"], ["Y"], to=onnx_type(spec.out_dtype)))
    else:
        oq = spec.out_qparams
        assert fit.out_scale is not None
        nodes += [
            const("out_scale", fit.out_scale, np.float32),
            const("out_zero_point", oq.zero_point, oq.np_dtype),
            helper.make_node("QuantizeLinear", ["g", "out_scale", "out_zero_point"], ["Y"]),
        ]
    return nodes


@register_body(LutSpec)
def _lut_op(spec: LutSpec, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    qp = spec.in_qparams
    in_t, out_t = onnx_type(qp.np_dtype), onnx_type(spec.table.dtype)
    attrs = _lut_attributes(spec)
    int16 = qp.dtype == "int16" or spec.out_dtype == "int16"
    notes: list[str] = []
    if lut_body == "auto" and spec.form == "quick":
        # measured (benchmarks/bench_gelulut.py): x·Sigmoid(1.702x) behind a DequantizeLinear
        # runs at 0.42-0.53x the speed of DQ -> Gelu -> Q, GatherElements at 0.96-1.15x
        lut_body = "gather-elements"
        notes.append("QuickGELU table: GatherElements (faster than its formula body)")
    elif lut_body == "auto" and opset < 20 and spec.form == "tanh":
        # no Gelu op before opset 20, and ORT fuses the spelled-out tanh formula into nothing:
        # it runs at 0.33x the speed of DQ -> Gelu -> Q, GatherElements at 1.1x
        # (bench_gelulut.py; in MiniLM with gelu_new, bench_minilm_latency.py: 1.12-1.22x the
        # fp32 model's latency with the formula, 0.96-1.12x with GatherElements). The erf
        # formula is fused (and in QDQ models GatherElements measured 1.4-1.6x slower).
        lut_body = "gather-elements"
        notes.append(f"tanh table at opset {opset} (no Gelu op): GatherElements")
    low_bit = qp.code_bits is not None or getattr(spec.out_qparams, "code_bits", None) is not None
    if lut_body in ("auto", "formula"):
        fit = None
        if low_bit:  # the body's QuantizeLinear would saturate to the container's range
            notes.append("low-bit codes: table body (GatherElements)")
        elif int16 and opset < 21:
            notes.append(f"formula body needs opset 21 for int16 Q/DQ (model has {opset})")
        else:
            fit = fit_formula(spec, mul_sub=opset < 20 and spec.form != "quick")
            if fit is None:
                notes.append("formula body: codes on rounding boundaries, no scale nudge helps")
        if fit is not None:
            vi = (
                helper.make_tensor_value_info("X", in_t, None),
                helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
            )
            body = tuple(_formula_body(spec, fit, opset))
            op = CustomOp("GeluLut", attrs, body, opset, in_t, out_t, "formula", (), vi)
            if fit.nudged:
                notes.append(
                    f"formula body with nudged scales in={fit.in_scale!r} out={fit.out_scale!r}"
                )
            problem = verify_on_all_codes(op, qp.codes(), spec.table) if verify else ""
            if not problem:
                return dataclasses.replace(op, notes=tuple(notes))
            notes.append(f"formula body rejected: {problem}")
        if lut_body == "formula":
            raise SpecError("cannot prove a formula body equal to the table: " + "; ".join(notes))
    kind, body = table_body(spec.table, qp.qmin, lut_body)
    return CustomOp("GeluLut", attrs, body, opset, in_t, out_t, kind, tuple(notes))
