"""The ``gelu_quant`` ops of an already converted model, with the element types of the tensors
they read and write (INT4/UINT4 for low-bit codes stored in 4-bit tensors): what ``inspect``
lists for such a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from gelu_quant.graph.ops.custom_op import DOMAIN, op_kind


@dataclass(frozen=True)
class ConvertedOp:
    """One ``gelu_quant`` node of the main graph."""

    node: str
    op_type: str
    input: str
    output: str
    input_type: str | None
    """Element type of the tensor it reads (``int8``, ``int4``, ``float``, …); None: unknown."""
    output_type: str | None

    @property
    def kind(self) -> str:
        """``GeluLut`` for ``GeluLut_3fa2c1d09e4b``."""
        return op_kind(self.op_type)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "kind": self.kind,
            "input": self.input,
            "output": self.output,
            "input_type": self.input_type,
            "output_type": self.output_type,
        }


def _type_name(elem_type: int) -> str | None:
    if elem_type == onnx.TensorProto.UNDEFINED:
        return None
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the main graph's tensors, by ONNX shape inference (through the local
    functions); an empty map when inference fails."""
    try:
        g = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:  # inference refuses some models; the types are then unknown
        return {}
    types = {t.name: t.data_type for t in g.initializer}
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    return types


def converted_ops(model: onnx.ModelProto) -> list[ConvertedOp]:
    """The ``gelu_quant`` nodes of ``model``'s main graph, in graph order (empty for a model
    that was not converted)."""
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    if not nodes:
        return []
    types = _tensor_types(model)

    def name(t: str) -> str | None:
        return _type_name(types.get(t, onnx.TensorProto.UNDEFINED))

    return [
        ConvertedOp(
            node=n.name,
            op_type=n.op_type,
            input=n.input[0] if n.input else "",
            output=n.output[0] if n.output else "",
            input_type=name(n.input[0]) if n.input else None,
            output_type=name(n.output[0]) if n.output else None,
        )
        for n in nodes
    ]
