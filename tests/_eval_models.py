"""Small hand-made models for the evaluator tests (ONNX text format + seeded weights).

``mlp``: three parallel GELU branches on ``x [N, 8]``, summed, then two outputs:
``logits [N, 4]`` (a classification output) and ``hidden [N, 8]``, the sum rounded down to a
multiple of 1/16 (so adding a power-of-two constant to it is exact in float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

from gelu_quant.graph.sites import GeluSite

REFERENCE_TEXT = """
<ir_version: 10, opset_import: ["" : 20]>
mlp (float[N, 8] x) => (float[N, 4] logits, float[N, 8] hidden) {
  h0 = MatMul(x, w0)
  g0 = Gelu(h0)
  h1 = MatMul(x, w1)
  g1 = Gelu(h1)
  h2 = MatMul(x, w2)
  g2 = Gelu(h2)
  s01 = Add(g0, g1)
  s = Add(s01, g2)
  logits = MatMul(s, w3)
  sixteen = Constant<value = float {16.0}>()
  s16 = Mul(s, sixteen)
  fl = Floor(s16)
  hidden = Div(fl, sixteen)
}
"""

SITES = tuple(
    GeluSite(
        id=f"gelu{i}",
        form="exact",
        spelling="onnx:Gelu",
        input=f"h{i}",
        output=f"g{i}",
        nodes=(f"gelu{i}",),
    )
    for i in range(3)
)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {f"w{i}": rng.normal(0, 0.8, size=(8, 8)).astype(np.float32) for i in range(3)}
    w["w3"] = rng.normal(0, 0.7, size=(8, 4)).astype(np.float32)
    return w


def build(text: str = REFERENCE_TEXT, seed: int = 0) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    for name, arr in weights(seed).items():
        m.graph.initializer.append(numpy_helper.from_array(arr, name))
    onnx.checker.check_model(m)
    return m


def variant(replace: dict[str, str]) -> onnx.ModelProto:
    """The reference with text replacements applied (a perturbed candidate)."""
    text = REFERENCE_TEXT
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return build(text)


ADD_C = 0.25
ADD_TEXT = {
    "hidden = Div(fl, sixteen)": (
        "hidden_pre = Div(fl, sixteen)\n  c = Constant<value = float {0.25}>()\n"
        "  hidden = Add(hidden_pre, c)"
    )
}
RELU_TEXT = {"g1 = Gelu(h1)": "g1 = Relu(h1)"}


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def data(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.5, size=(n, 8)).astype(np.float32)


def batches(x: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    return [{"x": x[i : i + size]} for i in range(0, len(x), size)]
