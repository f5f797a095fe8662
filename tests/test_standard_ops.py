"""Standard-op output (``--target int8-qdq-gelu``): Q -> DQ -> Gelu -> Q -> DQ that vendor
compilers fuse, with the calibrated qparams as they are.

Oracles: the spelled-out node sequence expected here; ORT running the converted models; the
float64 table (``Q_out(GELU64(DQ_in(q)))``, computed here from ``math``) that the standard ops
must reproduce on every code, except codes whose float64 value lies so close to a rounding
boundary that float32 GELU may land on the other side (bound stated below).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.errors import ModelError
from gelu_quant.graph.convert import ConvertConfig, convert_file, convert_model
from gelu_quant.lut.spec import spec_from_json

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"
F32_GELU_ERR = 32.0 * 2.0**-24  # relative to |x| + 1: 14x the worst float32 GELU error measured


def _fixture(name: str) -> onnx.ModelProto:
    return onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text())


def _gelu64(x: float, form: str) -> float:
    if form == "quick":
        return x / (1.0 + math.exp(-1.702 * x))
    if form == "tanh":
        k = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + math.tanh(k * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _codes_model(spec: dict, opset: int = 20) -> onnx.ModelProto:
    """DQ -> Gelu -> Q with the spec's qparams, the converted model's GELU on codes."""
    qi, qo = spec["in_qparams"], spec["out_qparams"]
    int_t = TensorProto.INT8 if qi["dtype"] == "int8" else TensorProto.UINT8
    np_t = np.int8 if qi["dtype"] == "int8" else np.uint8
    inits = [
        numpy_helper.from_array(np.float32(qi["scale"]), "si"),
        numpy_helper.from_array(np_t(qi["zero_point"]), "zi"),
        numpy_helper.from_array(np.float32(qo["scale"]), "so"),
        numpy_helper.from_array(np_t(qo["zero_point"]), "zo"),
    ]
    if spec["form"] == "quick":
        inits.append(numpy_helper.from_array(np.float32(1.702), "a"))
        gelu = [
            helper.make_node("Mul", ["x", "a"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["g"]),
        ]
    else:
        approx = "tanh" if spec["form"] == "tanh" else "none"
        gelu = [helper.make_node("Gelu", ["x"], ["g"], approximate=approx)]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "si", "zi"], ["x"]),
        *gelu,
        helper.make_node("QuantizeLinear", ["g", "so", "zo"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "codes",
        [helper.make_tensor_value_info("q", int_t, [None])],
        [helper.make_tensor_value_info("y", int_t, [None])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _boundary_codes(spec: dict) -> tuple[list[int], list[int]]:
    """(codes where ORT's standard ops differ from the float64 table, codes whose float64 value is
    within float32 GELU's error of a rounding boundary)."""
    qi, qo = spec["in_qparams"], spec["out_qparams"]
    lo, hi = (-128, 127) if qi["dtype"] == "int8" else (0, 255)
    oqlo, oqhi = (-128, 127) if qo["dtype"] == "int8" else (0, 255)
    np_t = np.int8 if qi["dtype"] == "int8" else np.uint8
    codes = np.arange(lo, hi + 1).astype(np_t)
    sess = ort.InferenceSession(
        _codes_model(spec).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = sess.run(None, {"q": codes})[0].astype(int)
    s_in, s_out = float(np.float32(qi["scale"])), float(np.float32(qo["scale"]))
    differ, near = [], []
    for q, y in zip(range(lo, hi + 1), got, strict=True):
        x = float(np.float32((q - qi["zero_point"]) * s_in))
        v = _gelu64(x, spec["form"]) / s_out + qo["zero_point"]
        want = min(max(round(v), oqlo), oqhi)  # round half to even, as QuantizeLinear does
        if y != want:
            differ.append(q)
        frac = v - math.floor(v)
        if abs(frac - 0.5) <= F32_GELU_ERR * (abs(x) + 1.0) / s_out + 4 * 2.0**-24 * (abs(v) + 1):
            near.append(q)
    return differ, near


@pytest.mark.parametrize(
    ("fixture", "form", "gelu_ops"),
    [
        ("erf_torchscript", "exact", ["Gelu"]),
        ("tanh_pow", "tanh", ["Gelu"]),
        ("quick_pattern", "quick", ["Mul", "Sigmoid", "Mul"]),
    ],
)
def test_float_site_becomes_q_dq_gelu_q_dq(fixture: str, form: str, gelu_ops: list[str]) -> None:
    model = _fixture(fixture)
    res = convert_model(model, ConvertConfig("int8-qdq-gelu", range=(-6.0, 6.0)))
    rec = res.manifest.converted[0]
    assert rec.body == "standard-ops" and rec.op_type is None and rec.form == form
    ops = [n.op_type for n in res.model.graph.node if n.name in rec.added_nodes]
    assert ops == [
        "QuantizeLinear",
        "DequantizeLinear",
        *gelu_ops,
        "QuantizeLinear",
        "DequantizeLinear",
    ]
    gelu = [n for n in res.model.graph.node if n.op_type == "Gelu"]
    for n in gelu:
        approx = {a.name: a.s.decode() for a in n.attribute}.get("approximate", "none")
        assert approx == ("tanh" if form == "tanh" else "none")
    assert not res.model.functions and all(o.domain != "gelu_quant" for o in res.model.opset_import)
    assert max(o.version for o in res.model.opset_import if o.domain in ("", "ai.onnx")) >= 20
    onnx.checker.check_model(res.model, full_check=True)
    # the scales are the calibrated ones, not nudged: those of the int8-lut spec of that range
    lut = convert_model(model, ConvertConfig("int8-lut", range=(-6.0, 6.0))).manifest.converted[0]
    assert rec.spec["in_qparams"] == lut.spec["in_qparams"]
    assert rec.spec["out_qparams"] == lut.spec["out_qparams"]
    inits = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    scales = {float(v) for k, v in inits.items() if k.endswith("scale")}
    assert float(np.float32(lut.spec["in_qparams"]["scale"])) in scales


def test_refusal_is_clear_when_the_model_cannot_be_upgraded() -> None:
    model = _fixture("erf_torchscript")
    model.graph.node[0].op_type = "NoSuchOp"  # the version converter cannot take it
    with pytest.raises(ModelError, match="opset 20"):
        convert_model(model, ConvertConfig("int8-qdq-gelu", range=(-6.0, 6.0)))


@pytest.fixture(scope="module")
def minilm_batch() -> dict[str, np.ndarray]:
    from gelu_quant.models.minilm import tokenize

    return tokenize(["Standard ops for vendor compilers.", "The dog sleeps all day long."], 24)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["opset17", "opset20", "dynamo", "ort-optimized", "qdq"])
def test_minilm_standard_ops(variant: str, tmp_path: Path, minilm_batch) -> None:
    """Every MiniLM export: checker's full check, runs in ORT, and each site's codes are the
    int8-lut table's except near rounding boundaries."""
    from gelu_quant.models.minilm import minilm_onnx

    src = minilm_onnx(variant)
    dst = tmp_path / "m.onnx"
    rng = None if variant == "qdq" else (-12.0, 12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = convert_file(src, dst, ConvertConfig("int8-qdq-gelu", range=rng))
    man = res.manifest
    assert len(man.converted) == 6 and not man.skipped
    onnx.checker.check_model(str(dst), full_check=True)
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    feeds = {i.name: minilm_batch[i.name] for i in sess.get_inputs()}
    assert all(np.all(np.isfinite(o)) for o in sess.run(None, feeds))
    for rec in man.converted:
        spec = rec.spec
        table = spec_from_json(spec).table.astype(int)  # what int8-lut would write
        differ, near = _boundary_codes(spec)
        assert set(differ) <= set(near), (rec.id, differ, near)
        # the float64 oracle and the int8-lut table agree (independently computed)
        qi = spec["in_qparams"]
        lo = -128 if qi["dtype"] == "int8" else 0
        s_in, s_out = (
            float(np.float32(qi["scale"])),
            float(np.float32(spec["out_qparams"]["scale"])),
        )
        for k in range(0, 256, 17):
            q = lo + k
            x = float(np.float32((q - qi["zero_point"]) * s_in))
            v = _gelu64(x, spec["form"]) / s_out + spec["out_qparams"]["zero_point"]
            if q not in near:
                assert table[k] == min(max(round(v), -128 if lo else 0), 127 if lo else 255)
