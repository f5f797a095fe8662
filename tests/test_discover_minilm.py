"""Discovery on the real all-MiniLM-L6-v2 in every exported variant (slow: uses cached exports).

Oracle: each site's claim — ``output = GELU(input [+ bias])`` — is checked numerically by running
the real model in ORT with the site's input and output tensors exposed as graph outputs, against
float64 GELU computed here with math.erf.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gelu_quant.graph.discover import discover
from gelu_quant.graph.sites import GeluSite
from gelu_quant.models import minilm

SPELLING = {
    "opset17": "pattern:erf",
    "opset20": "onnx:Gelu",
    "dynamo": "pattern:erf",
    "ort-optimized": "com.microsoft:BiasGelu",
    "qdq": "pattern:erf",
}


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _site_tensors(path: Path, sites: list[GeluSite]) -> dict[str, np.ndarray]:
    model = onnx.load(path)  # with external data: ORT gets the whole model as bytes
    known = {o.name for o in model.graph.output}
    for s in sites:
        for name in (s.input, s.output):
            if name not in known:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
                known.add(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = minilm.tokenize(["Return the absolute value of a number.", "Hello world."], 16)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    values = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    inits = {t.name: t for t in model.graph.initializer}
    out = dict(zip(names, (np.asarray(v) for v in values), strict=True))
    for s in sites:
        if s.bias is not None:
            out[s.bias] = onnx.numpy_helper.to_array(inits[s.bias])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(SPELLING))
def test_minilm_has_six_gelus_and_each_site_computes_gelu(variant: str) -> None:
    path = minilm.minilm_onnx(variant)
    found = discover(path)
    sites = found.sites
    assert [s.id for s in sites] == [f"gelu{i}" for i in range(6)]
    assert {s.spelling for s in sites} == {SPELLING[variant]}
    assert {s.form for s in sites} == {"exact"}
    assert all(s.dtype == "float32" and s.graph == "" for s in sites)
    assert found.near_misses == []

    proto = onnx.load(path, load_external_data=False)
    order = {n.name: i for i, n in enumerate(proto.graph.node)}
    assert all(n in order for s in sites for n in s.nodes)  # names are the model's own
    producer_pos = [max(order[n] for n in s.nodes) for s in sites]
    assert producer_pos == sorted(producer_pos)  # graph order
    assert len({n for s in sites for n in s.nodes}) == sum(len(s.nodes) for s in sites)

    if variant == "qdq":
        assert all(s.qdq_in is not None and s.qdq_out is not None for s in sites)
        assert all(s.qdq_in.dtype == "int8" for s in sites if s.qdq_in is not None)
        ops = {n.name: n.op_type for n in proto.graph.node}
        for s in sites:  # ORT's inner Q/DQ pairs belong to the site, the outer ones do not
            assert {ops[n] for n in s.nodes} >= {"QuantizeLinear", "DequantizeLinear", "Erf"}
            assert s.qdq_in is not None and s.qdq_in.node not in s.nodes
            assert s.qdq_out is not None and s.qdq_out.node not in s.nodes
    else:
        assert all(s.qdq_in is None and s.qdq_out is None for s in sites)

    values = _site_tensors(path, sites)
    for s in sites:
        x = values[s.input].astype(np.float64)
        if s.bias is not None:
            x = x + values[s.bias].astype(np.float64)
        y = values[s.output].astype(np.float64)
        if variant == "qdq":  # the inner int8 Q/DQ pairs round erf, 1+erf and x*(1+erf)
            np.testing.assert_allclose(y, _gelu(x), rtol=1e-2, atol=0.1)
        else:
            np.testing.assert_allclose(y, _gelu(x), rtol=1e-4, atol=1e-4)
