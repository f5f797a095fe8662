"""The pass that defines the ``gelu_quant`` ops a model uses: one model-local function each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from gelu_quant.graph.ops import DOMAIN, DOMAIN_VERSION, CustomOp


@dataclass
class AddGeluFunctions(ir.passes.InPlacePass):
    """Add each op's function (in the given order) and the ``gelu_quant`` opset import."""

    ops: Sequence[CustomOp]

    def __post_init__(self) -> None:
        super().__init__()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for op in self.ops:
            fn = ir.serde.deserialize_function(op.function())
            model.functions.setdefault(fn.identifier(), fn)
        if self.ops and DOMAIN not in model.opset_imports:
            model.opset_imports[DOMAIN] = DOMAIN_VERSION
        return ir.passes.PassResult(model, modified=bool(self.ops))
