"""``GeluTanhFormula`` and ``GeluQuick``: the float baselines' ops, their op sequences rounded
to the compute dtype after every op.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import FloatSeq
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.lut.baselines import QuickGeluSpec, TanhGeluSpec


def _float_formula_body(spec: TanhGeluSpec | QuickGeluSpec) -> list[onnx.NodeProto]:
    """TanhGeluSpec / QuickGeluSpec: the spec's op sequence, each op rounded to compute dtype."""
    cp = spec.compute_dtype
    seq = FloatSeq(round16=cp == "float16")
    seq.nodes.append(helper.make_node("Cast", ["X"], ["xf32"], to=TensorProto.FLOAT))
    x = "xf32"
    if cp == "float16" and spec.io_dtype == "float32":  # x.astype(io).astype(cp)
        x = seq.op("Identity", x)
    if isinstance(spec, TanhGeluSpec):
        c3 = seq.const("c3", 0.044715, cp)
        k = seq.const("k", math.sqrt(2.0 / math.pi), cp)
        one = seq.const("one", 1.0, cp)
        half = seq.const("half", 0.5, cp)
        x3 = seq.op("Mul", seq.op("Mul", x, x), x)
        v = seq.op("Add", x, seq.op("Mul", c3, x3))
        w = seq.op("Mul", k, v)
        s_ = seq.op("Add", one, seq.op("Tanh", w))
        y = seq.op("Mul", seq.op("Mul", half, x), s_)
    elif isinstance(spec, QuickGeluSpec):
        a = seq.const("alpha", 1.702, cp)
        one = seq.const("one", 1.0, cp)
        z = seq.op("Mul", a, x)
        e = seq.op("Exp", seq.op("Neg", z, exact=True))
        sig = seq.op("Div", one, seq.op("Add", one, e))
        y = seq.op("Mul", x, sig)
    else:  # pragma: no cover - registry guarantees the type
        raise SpecError(f"no formula body for {spec.kind}")
    seq.nodes.append(helper.make_node("Cast", [y], ["Y"], to=onnx_type(spec.io_dtype)))
    return seq.nodes


@register_body(TanhGeluSpec)
@register_body(QuickGeluSpec)
def _float_formula_op(
    spec: TanhGeluSpec | QuickGeluSpec, *, opset: int, lut_body: LutBody, verify: bool
) -> CustomOp:
    kind = "GeluTanhFormula" if spec.kind == "tanh-formula" else "GeluQuick"
    attrs = (
        helper.make_attribute("lo", float(spec.lo)),
        helper.make_attribute("hi", float(spec.hi)),
        helper.make_attribute("compute_dtype", spec.compute_dtype),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp(kind, attrs, tuple(_float_formula_body(spec)), opset, t, t, "formula")
