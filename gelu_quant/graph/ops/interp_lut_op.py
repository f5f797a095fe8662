"""``GeluInterpLut``: an interpolated table's op; its body is ``GatherElements`` of the
equivalent full table (the attributes keep the knots).
"""

from __future__ import annotations

from onnx import helper

from gelu_quant.graph.ops.body_emit import tensor_attr
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.graph.ops.lut_op import table_body
from gelu_quant.lut.interp import InterpLutSpec


@register_body(InterpLutSpec)
def _interp_op(spec: InterpLutSpec, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    qp, oq = spec.in_qparams, spec.out_qparams
    attrs = (
        tensor_attr("knots", spec.knots),
        helper.make_attribute("segments", int(spec.segments)),
        helper.make_attribute("in_scale", float(qp.scale)),
        helper.make_attribute("in_zero_point", int(qp.zero_point)),
        helper.make_attribute("out_scale", float(oq.scale)),
        helper.make_attribute("out_zero_point", int(oq.zero_point)),
        helper.make_attribute("form", spec.form),
    )
    kind, body = table_body(spec.full_table(), qp.qmin, lut_body)
    return CustomOp(
        "GeluInterpLut", attrs, body, opset, onnx_type(qp.np_dtype), onnx_type(oq.np_dtype), kind
    )
