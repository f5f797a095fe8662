"""Tiny hand-built models shared by the CLI contract tests (exit codes, untrusted models)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_gelu(w: np.ndarray) -> onnx.ModelProto:
    """``x[N, k] -> MatMul(W[k, n]) -> Gelu (opset 20) -> y[N, n]``: one GELU, one weight."""
    k, n = w.shape
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Gelu", ["h"], ["y"], name="gelu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w, "W")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m
