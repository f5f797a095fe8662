"""Small hand-made ONNX models with GELUs for the calibrator tests (and their numpy oracles)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.graph.sites import GeluSite

SCALE = np.float32(1.5)
SHIFT = np.float32(0.25)


def _erf_gelu(nodes: list[onnx.NodeProto], x: str, y: str, tag: str) -> tuple[str, ...]:
    """Append ``y = x * 0.5 * (1 + erf(x / sqrt2))`` (the torch exporter's pattern)."""
    names = tuple(f"{tag}_{i}" for i in range(5))
    nodes += [
        helper.make_node("Div", [x, "sqrt2"], [f"{tag}_d"], name=names[0]),
        helper.make_node("Erf", [f"{tag}_d"], [f"{tag}_e"], name=names[1]),
        helper.make_node("Add", [f"{tag}_e", "one"], [f"{tag}_a"], name=names[2]),
        helper.make_node("Mul", [x, f"{tag}_a"], [f"{tag}_m"], name=names[3]),
        helper.make_node("Mul", [f"{tag}_m", "half"], [y], name=names[4]),
    ]
    return names


def two_gelu_model(weight_scale: float = 1.0) -> tuple[onnx.ModelProto, list[GeluSite]]:
    """``p0 = x*1.5 + 0.25``, ``y0 = gelu(p0)``, ``p1 = y0 + x``, ``y = gelu(p1)``.

    Elementwise float32 ops only, so numpy reproduces the pre-activations bit for bit.
    ``weight_scale`` changes one constant (for "different model" tests).
    """
    nodes: list[onnx.NodeProto] = [
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="mul_scale"),
        helper.make_node("Add", ["xs", "shift"], ["p0"], name="add_shift"),
    ]
    n0 = _erf_gelu(nodes, "p0", "y0", "g0")
    nodes.append(helper.make_node("Add", ["y0", "x"], ["p1"], name="add_res"))
    n1 = _erf_gelu(nodes, "p1", "y", "g1")
    inits = [
        numpy_helper.from_array(np.array(SCALE * np.float32(weight_scale), np.float32), "scale"),
        numpy_helper.from_array(np.array(SHIFT, np.float32), "shift"),
        numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    g = helper.make_graph(
        nodes,
        "two_gelus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    sites = [
        GeluSite(
            id="gelu0", form="exact", spelling="pattern:erf", input="p0", output="y0", nodes=n0
        ),
        GeluSite(
            id="gelu1", form="exact", spelling="pattern:erf", input="p1", output="y", nodes=n1
        ),
    ]
    return m, sites


def gelu_f32(p: np.ndarray) -> np.ndarray:
    """float32 GELU as the pattern computes it (for the oracle's second pre-activation)."""
    import onnxruntime as ort

    nodes: list[onnx.NodeProto] = []
    _erf_gelu(nodes, "p", "y", "g")
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("sqrt2", math.sqrt(2.0)), ("one", 1.0), ("half", 0.5))
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"p": p})[0])


def oracle_preactivations(batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The two sites' pre-activations over all batches (numpy p0, ORT-run GELU for p1).

    p0 is IEEE arithmetic (exact). p1 passes through ORT's erf, so it is compared exactly only
    because the collector's p1 comes from the same ORT kernel on the same float32 values (the
    version-independent part: elementwise kernels do not depend on how the data is batched;
    checked with ORT 1.18 to 1.32), not because erf is exactly specified."""
    x = np.concatenate(batches)
    p0 = x * SCALE + SHIFT
    p1 = gelu_f32(p0) + x
    return p0, p1


def bias_gelu_model() -> tuple[onnx.ModelProto, list[GeluSite]]:
    """``y = com.microsoft.BiasGelu(x, b)``: a bias-folded site."""
    b = np.linspace(-1, 1, 6).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("BiasGelu", ["x", "b"], ["y"], name="bg", domain="com.microsoft")],
        "bias_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
        [numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    m.ir_version = 10
    site = GeluSite(
        id="gelu0",
        form="exact",
        spelling="com.microsoft:BiasGelu",
        input="x",
        output="y",
        nodes=("bg",),
        bias="b",
    )
    return m, [site]


def save(m: onnx.ModelProto, path: Path) -> Path:
    onnx.save(m, path)
    return path


def batches(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((4 + i, 6)) * (1 + i)).astype(np.float32) for i in range(n)]
