"""``GeluInt``: I-BERT's integer i-GELU in int32 ONNX ops (floor division by ``2**n`` as
``(a - Mod(a, 2**n)) / 2**n``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import ModelError
from gelu_quant.graph.ops.body_emit import const
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.lut.baselines import IGeluSpec


def igelu_body(spec: IGeluSpec, opset: int) -> list[onnx.NodeProto]:
    """I-BERT's i-GELU (:func:`gelu_quant.lut.baselines.igelu_int`) in int32 ONNX ops."""
    k = spec.constants
    qp = spec.qparams
    if qp.dtype == "int16" and opset < 21:
        raise ModelError(f"16-bit i-GELU needs opset 21 for int16 QuantizeLinear (model: {opset})")
    i32 = np.int32
    nodes = [
        helper.make_node("Cast", ["X"], ["x32"], to=TensorProto.FLOAT),
        const("scale", qp.scale, np.float32),
        const("zero", 0, qp.np_dtype),
        helper.make_node("QuantizeLinear", ["x32", "scale", "zero"], ["q8"]),
        helper.make_node("Cast", ["q8"], ["q"], to=TensorProto.INT32),
        const("neg_q_b", -k.q_b, i32),
        const("q_b", k.q_b, i32),
        const("q_c", k.q_c, i32),
        const("q_1", k.q_1, i32),
        helper.make_node("Abs", ["q"], ["q_abs0"]),
        helper.make_node("Min", ["q_abs0", "neg_q_b"], ["q_abs"]),
        helper.make_node("Add", ["q_abs", "q_b"], ["base"]),
        helper.make_node("Mul", ["base", "base"], ["sq"]),
        helper.make_node("Add", ["sq", "q_c"], ["q_l"]),
        helper.make_node("Sign", ["q"], ["sign"]),
        helper.make_node("Mul", ["sign", "q_l"], ["signed"]),
    ]
    erf = "signed"
    if k.shift_bits:
        # floor division by 2^n: subtract the (non-negative) remainder, then divide exactly
        nodes += [
            const("pow2", 1 << k.shift_bits, i32),
            helper.make_node("Mod", ["signed", "pow2"], ["rem"], fmod=0),
            helper.make_node("Sub", ["signed", "rem"], ["floored"]),
            helper.make_node("Div", ["floored", "pow2"], ["q_erf"]),
        ]
        erf = "q_erf"
    nodes += [
        helper.make_node("Add", [erf, "q_1"], ["inner"]),
        helper.make_node("Mul", ["q", "inner"], ["q_out"]),
        helper.make_node("Cast", ["q_out"], ["q_out64"], to=TensorProto.DOUBLE),
        const("s_out", k.s_out, np.float64),
        helper.make_node("Mul", ["q_out64", "s_out"], ["y64"]),
        helper.make_node("Cast", ["y64"], ["y32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["y32"], ["y_io"], to=onnx_type(spec.io_dtype)),
        helper.make_node("IsNaN", ["X"], ["nan"]),
        helper.make_node("Where", ["nan", "X", "y_io"], ["Y"]),
    ]
    return nodes


@register_body(IGeluSpec)
def _igelu_op(spec: IGeluSpec, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    k = spec.constants
    attrs = (
        helper.make_attribute("in_scale", float(k.scale)),
        helper.make_attribute("in_bits", int(spec.in_bits)),
        helper.make_attribute("q_b", int(k.q_b)),
        helper.make_attribute("q_c", int(k.q_c)),
        helper.make_attribute("q_1", int(k.q_1)),
        helper.make_attribute("shift_bits", int(k.shift_bits)),
        helper.make_attribute("out_scale", float(k.s_out)),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp("GeluInt", attrs, tuple(igelu_body(spec, opset)), opset, t, t, "int32")
