"""Small emitters for function bodies: ``Constant`` nodes, tensor attributes, and
:class:`FloatSeq`, the one writer of "float16 arithmetic" (each op in float32, then ``Cast`` to
float16 and back: ORT's CPU kernels run a float16 chain in float32 and would drop the
intermediate roundings numpy makes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper


def const(name: str, value: npt.ArrayLike, dtype: Any = None) -> onnx.NodeProto:
    """A ``Constant`` node producing ``name``."""
    arr = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name))


def tensor_attr(name: str, arr: npt.NDArray[Any]) -> onnx.AttributeProto:
    return helper.make_attribute(name, numpy_helper.from_array(np.ascontiguousarray(arr), name))


class FloatSeq:
    """Builds a float body op by op; with ``round16`` every result is rounded to float16
    (computed in float32, then ``Cast`` to float16 and back), as numpy's float16 ops do."""

    def __init__(self, round16: bool, nodes: list[onnx.NodeProto] | None = None) -> None:
        self.round16 = round16
        self.nodes: list[onnx.NodeProto] = [] if nodes is None else nodes
        self.n = 0

    def op(self, op_type: str, *inputs: str, exact: bool = False, out: str | None = None) -> str:
        """Append ``op_type(inputs)``; its result (``out``, or ``v<n>``) rounded unless
        ``exact`` (ops whose result is exact in float16, e.g. ``Neg``)."""
        self.n += 1
        out = f"v{self.n}" if out is None else out
        if not self.round16 or exact:
            self.nodes.append(helper.make_node(op_type, list(inputs), [out]))
            return out
        self.nodes += [
            helper.make_node(op_type, list(inputs), [f"{out}_f32"]),
            helper.make_node("Cast", [f"{out}_f32"], [f"{out}_f16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [f"{out}_f16"], [out], to=TensorProto.FLOAT),
        ]
        return out

    def const(self, name: str, value: float, dtype: str) -> str:
        # constants rounded to the compute dtype, held in float32 (exact)
        self.nodes.append(const(name, np.float32(np.dtype(dtype).type(value))))
        return name
