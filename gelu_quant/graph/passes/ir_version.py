"""The pass that keeps the IR version one ONNX Runtime loads and local functions need."""

from __future__ import annotations

import onnx_ir as ir

MAX_IR_VERSION = 10
"""IR version written when the input's is higher (ORT 1.31 reads up to 13; onnx 1.23 writes 14)."""
MIN_IR_VERSION = 8
"""Model-local functions need IR 8."""


class LoadableIrVersion(ir.passes.InPlacePass):
    """Clamp the model's IR version into ``[MIN_IR_VERSION, MAX_IR_VERSION]``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        v = min(max(model.ir_version, MIN_IR_VERSION), MAX_IR_VERSION)
        modified = v != model.ir_version
        model.ir_version = v
        return ir.passes.PassResult(model, modified=modified)
