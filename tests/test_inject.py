"""Conversion: every spelling fixture converted, op types as the rules say, every other node
byte-identical, outputs equal to the spec's numpy reference; external data; ranges files;
all-MiniLM-L6-v2 in every export variant (slow)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from _formulas import assert_sequence_up_to_transcendental
from onnx import helper, numpy_helper

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.graph.convert import ConvertConfig, convert_file, convert_model
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.graph.names import ensure_node_names
from gelu_quant.graph.ops import DOMAIN, op_kind
from gelu_quant.graph.sites import QuantInfo
from gelu_quant.lut.spec import spec_from_json

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"
CONVERTIBLE = [
    "ms_quickgelu",
    "quick_pattern",
    "qdq_quick_ort",
    "erf_div_two",
    "erf_dynamo",
    "erf_rsqrt2_fp16",
    "erf_torchscript",
    "ms_biasgelu",
    "ms_fastgelu",
    "ms_fastgelu_bias",
    "ms_gelu",
    "onnx_gelu",
    "onnx_gelu_tanh",
    "qdq_erf_ort",
    "qdq_gelu",
    "tanh_mulchain",
    "tanh_pow",
    "unnamed_nodes",
]
GELU_OPS = {"Erf", "Tanh", "Gelu", "BiasGelu", "FastGelu", "Sigmoid"}


def load_fixture(name: str) -> onnx.ModelProto:
    return onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text())


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type
    return types


def run_exposing(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """Run ``model`` in ORT with ``names`` added as graph outputs."""
    if not names:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    types = _types(m)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, types[n], None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(names, feeds)
    return dict(zip(names, outs, strict=True))


def sample_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 5 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype.kind == "b":
            feeds[i.name] = np.array(True)
        else:
            feeds[i.name] = (rng.normal(0.0, 3.0, size=shape)).astype(dtype)
    return feeds


def expected_added(site: Any, kind: str) -> list[str]:
    """The conversion rules of issue 3, as op kinds in graph order."""
    fp16 = site.dtype == "float16"
    bias = ["Add"] if site.bias else []
    if kind == "lut":
        if site.qdq_in is not None and site.qdq_out is not None:
            return ["GeluLut"]
        cast = ["Cast"] if fp16 else []
        return [*bias, *cast, "QuantizeLinear", "GeluLut", "DequantizeLinear", *cast]
    cast = [] if fp16 else ["Cast"]
    return [*bias, *cast, "GeluPoly", *cast]


def kept_nodes_identical(original: onnx.ModelProto, result: Any) -> None:
    """Every node outside the GELUs is byte-identical and in the same order."""
    named = ensure_node_names(original)
    replaced = {n for s in result.manifest.converted for n in s.replaced_nodes}
    added = {n for s in result.manifest.converted for n in s.added_nodes}
    before = [
        o.SerializeToString()
        for o, nn in zip(original.graph.node, named.graph.node, strict=True)
        if nn.name not in replaced
    ]
    after = [n.SerializeToString() for n in result.model.graph.node if n.name not in added]
    assert before == after


@pytest.mark.parametrize("name", CONVERTIBLE)
@pytest.mark.parametrize("target", ["int8-lut", "fp16-poly"])
def test_fixture_conversion(name: str, target: str) -> None:
    model = load_fixture(name)
    sites = find_gelu_sites(model)
    assert len(sites) == 1
    site = sites[0]
    cfg = ConvertConfig(target=target, range=(-6.0, 6.0), poly_segments=4, poly_degree=2)
    res = convert_model(model, cfg, sites=sites)
    rec = res.manifest.site(site.id)
    assert rec.status == "converted", rec.reason
    onnx.checker.check_model(res.model, full_check=True)
    assert res.model.ir_version <= 10
    # op types: the site's nodes are gone, the rule's nodes are in their place
    added = [n for n in res.model.graph.node if n.name in rec.added_nodes]
    kind = "lut" if target.endswith("lut") else "poly"
    assert [op_kind(n.op_type) if n.domain == DOMAIN else n.op_type for n in added] == (
        expected_added(site, kind)
    )
    assert not GELU_OPS & {n.op_type for n in res.model.graph.node}
    kept_nodes_identical(model, res)
    # values: the converted model computes the spec on the site's input
    spec = spec_from_json(rec.spec)
    feeds = sample_feeds(model)
    if rec.mode == "qdq":
        assert site.qdq_in is not None and site.qdq_out is not None
        codes = run_exposing(model, feeds, [site.qdq_in.tensor])[site.qdq_in.tensor]
        got = run_exposing(res.model, feeds, [site.qdq_out.tensor])[site.qdq_out.tensor]
        np.testing.assert_array_equal(got, spec.lookup(codes))  # type: ignore[attr-defined]
        return
    names = [site.input] + ([site.bias] if site.bias else [])
    vals = run_exposing(model, feeds, [n for n in names if n not in feeds])
    vals.update({k: v for k, v in feeds.items() if k in names})
    for t in model.graph.initializer:
        if t.name in names:
            vals[t.name] = numpy_helper.to_array(t)
    x = vals[site.input] + vals[site.bias] if site.bias else vals[site.input]
    got = run_exposing(res.model, feeds, [site.output])[site.output]
    with np.errstate(all="ignore"):
        want = np.asarray(spec.evaluate(x)).astype(x.dtype)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", ["int8-interp16", "int8-interp128", "uint8-lut"])
def test_other_table_targets(target: str) -> None:
    model = load_fixture("onnx_gelu")
    site = find_gelu_sites(model)[0]
    res = convert_model(model, ConvertConfig(target, range=(-6.0, 6.0)), sites=[site])
    spec = spec_from_json(res.manifest.converted[0].spec)
    feeds = sample_feeds(model)
    x = run_exposing(model, feeds, [site.input])[site.input]
    got = run_exposing(res.model, feeds, [site.output])[site.output]
    np.testing.assert_array_equal(got, spec.evaluate(x))


@pytest.mark.parametrize(
    "target", ["fp16-tanh-formula", "fp32-tanh-formula", "fp16-quick-gelu", "int8-igelu"]
)
def test_baseline_targets(target: str) -> None:
    model = load_fixture("erf_div_two")
    site = find_gelu_sites(model)[0]
    res = convert_model(model, ConvertConfig(target, range=(-6.0, 6.0)), sites=[site])
    rec = res.manifest.converted[0]
    kinds = [op_kind(n.op_type) for n in res.model.graph.node if n.domain == DOMAIN]
    assert kinds == [
        {
            "fp16-tanh-formula": "GeluTanhFormula",
            "fp32-tanh-formula": "GeluTanhFormula",
            "fp16-quick-gelu": "GeluQuick",
            "int8-igelu": "GeluInt",
        }[target]
    ]
    spec = spec_from_json(rec.spec)
    feeds = sample_feeds(model)
    x = run_exposing(model, feeds, [site.input])[site.input]
    got = run_exposing(res.model, feeds, [site.output])[site.output]
    if target == "int8-igelu":  # integer arithmetic and one rounding: exact
        np.testing.assert_array_equal(got, np.asarray(spec.evaluate(x)).astype(np.float32))
        return
    # float formulas: the spec's op sequence exactly, up to ORT's tanh/exp kernel (not
    # correctly rounded; within 1 float16 / 8 float32 ulps, see tests/_formulas.py)
    io, cp = spec.io_dtype, spec.compute_dtype  # type: ignore[attr-defined]
    assert np.array_equal(got.astype(io).astype(np.float32), got)  # an io-dtype result, widened
    which = "quick" if target.endswith("quick-gelu") else "tanh"
    assert_sequence_up_to_transcendental(got.astype(io), x, which, io, cp, target, True)


def test_conversion_is_deterministic_and_leaves_the_input_alone() -> None:
    model = load_fixture("erf_torchscript")
    before = model.SerializeToString()
    cfg = ConvertConfig(target="int8-lut", range=(-5.0, 7.0))
    a = convert_model(model, cfg)
    b = convert_model(model, cfg)
    assert model.SerializeToString() == before
    assert a.model.SerializeToString(deterministic=True) == b.model.SerializeToString(
        deterministic=True
    )
    assert a.manifest.dumps() == b.manifest.dumps()


def test_skipped_sites_and_nothing_to_convert() -> None:
    with pytest.raises(ModelError, match="nothing to convert"):
        convert_model(load_fixture("if_subgraph"), ConvertConfig("int8-lut", range=(-4.0, 4.0)))
    with pytest.raises(ModelError, match="computes GELU, not QuickGELU"):
        convert_model(
            load_fixture("ms_quickgelu"), ConvertConfig("fp32-tanh-formula", range=(-4.0, 4.0))
        )
    with pytest.raises(ModelError, match="different function"):
        convert_model(
            load_fixture("ms_quickgelu"), ConvertConfig("int8-lut", range=(-4, 4), form="exact")
        )
    with pytest.raises(BadInputError, match="needs a range"):
        convert_model(load_fixture("onnx_gelu"), ConvertConfig("int8-lut"))
    with pytest.raises(BadInputError, match="no site named"):
        convert_model(
            load_fixture("onnx_gelu"), ConvertConfig("int8-lut", range=(-4, 4), sites=("gx",))
        )
    with pytest.raises(BadInputError, match="unknown target"):
        ConvertConfig("int9-lut")


def test_qdq_site_needs_no_range_and_collapses() -> None:
    model = load_fixture("qdq_gelu")
    res = convert_model(model, ConvertConfig("int8-lut"))
    rec = res.manifest.converted[0]
    assert rec.mode == "qdq" and rec.range is None and rec.range_source == "qdq"
    site = find_gelu_sites(model)[0]
    assert site.qdq_in is not None and site.qdq_out is not None
    lut = next(n for n in res.model.graph.node if n.domain == DOMAIN)
    assert list(lut.input) == [site.qdq_in.tensor] and list(lut.output) == [site.qdq_out.tensor]
    spec = spec_from_json(rec.spec)
    assert spec.in_qparams.scale == np.float32(site.qdq_in.scale)  # type: ignore[attr-defined]
    assert spec.out_qparams.scale == np.float32(site.qdq_out.scale)  # type: ignore[attr-defined]
    assert rec.quantized_output is not None and rec.quantized_output["tensor"] == lut.output[0]


def test_qdq_site_whose_float_output_is_read_elsewhere() -> None:
    """The float GELU output also feeds a residual Add: it is rebuilt by a DequantizeLinear of
    the op's codes, and the DQ feeding the GELU stays when something else reads it."""
    text = (FIXTURES / "qdq_gelu.onnxtxt").read_text()
    text = text.replace("=> (float[N,16] y)", "=> (float[N,16] y, float[N,16] r)")
    text = text.replace(
        "[y_dq] y = DequantizeLinear (gq, s_out, zp_out)",
        "[y_dq] y = DequantizeLinear (gq, s_out, zp_out)\n  [res] r = Add (g, x)",
    )
    model = onnx.parser.parse_model(text)
    site = find_gelu_sites(model)[0]
    if site.qdq_out is None:  # discovery does not claim a Q whose input has other readers
        site = dataclasses.replace(
            site, qdq_out=QuantInfo("gq", float(np.float32(0.0166)), -118, "int8", "g_q")
        )
    res = convert_model(model, ConvertConfig("int8-lut"), sites=[site])
    rec = res.manifest.converted[0]
    assert rec.output_tensor == "g"
    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("DequantizeLinear") == 3  # x_dq kept, g rebuilt, y_dq
    assert "Gelu" not in ops
    feeds = sample_feeds(model)
    out = run_exposing(res.model, feeds, ["hq", "gq", "g", "r"])
    spec = spec_from_json(rec.spec)
    np.testing.assert_array_equal(out["gq"], spec.lookup(out["hq"]))  # type: ignore[attr-defined]
    oq = spec.out_qparams  # type: ignore[attr-defined]
    np.testing.assert_array_equal(out["g"], oq.dequantize(out["gq"], np.float32))
    x = spec.in_qparams.dequantize(out["hq"], np.float32)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(out["r"], out["g"] + x)


def test_expand_gives_the_same_outputs() -> None:
    model = load_fixture("erf_torchscript")
    feeds = sample_feeds(model)
    cfg = ConvertConfig("int8-lut", range=(-6.0, 6.0))
    plain = convert_model(model, cfg)
    flat = convert_model(model, ConvertConfig("int8-lut", range=(-6.0, 6.0), expand=True))
    assert not flat.model.functions
    assert all(n.domain != DOMAIN for n in flat.model.graph.node)
    out = model.graph.output[0].name
    np.testing.assert_array_equal(
        run_exposing(plain.model, feeds, [out])[out], run_exposing(flat.model, feeds, [out])[out]
    )


def _big_model() -> onnx.ModelProto:
    """MatMul with a 512x1024 weight (2 MB) feeding an erf GELU."""
    w = np.random.default_rng(1).normal(0, 0.05, (512, 1024)).astype(np.float32)
    text = """
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[N,512] x) => (float[N,1024] y) {
      [mm] h = MatMul (x, w)
      [c2] s2 = Constant <value = float {1.4142135381698608}> ()
      [div] d = Div (h, s2)
      [erf] e = Erf (d)
      [c1] one = Constant <value = float {1.0}> ()
      [add] a = Add (e, one)
      [mul] m = Mul (h, a)
      [ch] half = Constant <value = float {0.5}> ()
      [mul2] y = Mul (m, half)
    }
    """
    m = onnx.parser.parse_model(text)
    m.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return m


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_external_data_stays_external(tmp_path: Path) -> None:
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save_model(_big_model(), str(src), save_as_external_data=True, location="model.onnx.data")
    digests = {p: _sha(p) for p in src.parent.iterdir()}
    out = tmp_path / "out" / "model.gq.onnx"
    out.parent.mkdir()
    res = convert_file(src, out, ConvertConfig("int8-lut", range=(-4.0, 4.0)))
    assert {p: _sha(p) for p in src.parent.iterdir()} == digests  # inputs untouched
    data = out.with_name("model.gq.onnx.data")
    assert data.stat().st_size >= 512 * 1024 * 4
    assert out.stat().st_size < 100_000
    assert res.manifest.external_data == data.name
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.gq.manifest.json",
        "model.gq.onnx",
        "model.gq.onnx.data",
    ]
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(2).normal(0, 1, (3, 512)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    got = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    want = convert_model(_big_model(), ConvertConfig("int8-lut", range=(-4.0, 4.0)))
    ref = run_exposing(want.model, {"x": x}, ["y"])["y"]
    np.testing.assert_array_equal(got, ref)
    # same bytes on a second run
    out2 = tmp_path / "out" / "again.onnx"
    convert_file(src, out2, ConvertConfig("int8-lut", range=(-4.0, 4.0)))
    assert _sha(out2.with_name("again.onnx.data")) == _sha(data)


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save_model(load_fixture("onnx_gelu"), str(src))
    digest = _sha(src)
    with pytest.raises(BadInputError, match="overwrite"):
        convert_file(src, src, ConvertConfig("int8-lut", range=(-4.0, 4.0)))
    with pytest.raises(BadInputError, match="collides"):
        convert_file(
            src,
            tmp_path / "o.onnx",
            ConvertConfig("int8-lut", range=(-4.0, 4.0)),
            manifest_path=src,
        )
    assert _sha(src) == digest
    ext = tmp_path / "e.onnx"
    onnx.save_model(_big_model(), str(ext), save_as_external_data=True, location="x.onnx.data")
    with pytest.raises(BadInputError, match="external data"):
        convert_file(ext, tmp_path / "x.onnx", ConvertConfig("int8-lut", range=(-4.0, 4.0)))


def _ranges_file(path: Path, model_path: Path, lo: float, hi: float) -> None:
    from gelu_quant.calib.ranges_file import RangesFile
    from gelu_quant.fingerprint import model_fingerprint

    RangesFile(
        model_name=model_path.name,
        fingerprint=model_fingerprint(str(model_path)),
        data={"samples": 1},
        method="minmax",
        params={},
        sites=[
            {
                "id": "gelu0",
                "ranges": {
                    "minmax": {"input": [lo, hi], "output": [-0.17, hi]},
                    "percentile": {"input": [lo / 2, hi / 2], "output": [-0.17, hi / 2]},
                },
                "chosen": "minmax",
            }
        ],
    ).save(path)


def test_ranges_file_gives_per_site_ranges(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save_model(load_fixture("erf_torchscript"), str(src))
    rf = tmp_path / "ranges.json"
    _ranges_file(rf, src, -7.0, 3.0)
    cfg = ConvertConfig("int8-lut", range=(-1.0, 1.0), tail_cut=False)
    res = convert_file(src, tmp_path / "o.onnx", cfg, ranges=load_ranges(rf))
    rec = res.manifest.converted[0]
    assert rec.range == (-7.0, 3.0) and rec.range_source == "ranges:chosen"
    from gelu_quant.lut.table import build_lut

    assert spec_from_json(rec.spec) == build_lut(in_range=(-7.0, 3.0))
    # by default the calibrated range starts where GELU's negative tail stops mattering
    from gelu_quant.lut.tails import negative_tail_cut

    res = convert_file(
        src, tmp_path / "c.onnx", dataclasses.replace(cfg, tail_cut=True), ranges=load_ranges(rf)
    )
    rec = res.manifest.converted[0]
    assert rec.range_source == "ranges:chosen, tail cut"
    assert rec.range == (negative_tail_cut(3.0), 3.0)
    res = convert_file(
        src,
        tmp_path / "p.onnx",
        ConvertConfig("int8-lut", method="percentile", tail_cut=False),
        ranges=load_ranges(rf),
    )
    assert res.manifest.converted[0].range == (-3.5, 1.5)
    with pytest.raises(ModelError, match="no 'entropy' range"):
        convert_file(
            src,
            tmp_path / "e.onnx",
            ConvertConfig("int8-lut", method="entropy"),
            ranges=load_ranges(rf),
        )
    # a ranges file of another model is refused unless forced
    other = tmp_path / "other.onnx"
    onnx.save_model(load_fixture("erf_div_two"), str(other))
    with pytest.raises(ModelError, match="different model"):
        convert_file(other, tmp_path / "q.onnx", ConvertConfig("int8-lut"), ranges=load_ranges(rf))
    res = convert_file(
        other,
        tmp_path / "q.onnx",
        ConvertConfig("int8-lut", force=True, tail_cut=False),
        ranges=load_ranges(rf),
    )
    assert res.manifest.converted[0].range == (-7.0, 3.0)


def test_manifest_has_spec_range_and_error_bound(tmp_path: Path) -> None:
    import json

    from gelu_quant.numerics import gelu

    src = tmp_path / "m.onnx"
    onnx.save_model(load_fixture("onnx_gelu"), str(src))
    convert_file(src, tmp_path / "o.onnx", ConvertConfig("int8-lut", range=(-8.0, 4.0)))
    d = json.loads((tmp_path / "o.manifest.json").read_text())
    assert d["schema"] == "gelu-quant/manifest" and d["converted"] == 1
    s = d["sites"][0]
    assert s["range"] == [-8.0, 4.0] and s["range_source"] == "--range"
    spec = spec_from_json(s["spec"])
    # the error bound is the spec's error against float64 GELU over its domain
    lo, hi = spec.domain
    x = np.linspace(lo, hi, 20001)
    err = np.max(np.abs(np.asarray(spec.evaluate(x), dtype=np.float64) - gelu(x)))
    assert err <= s["error"]["max_abs"] + 1e-12
    assert s["error"]["max_abs"] < 0.05


def test_int16_lut_needs_opset21() -> None:
    m = load_fixture("erf_torchscript")  # opset 17: no int16 Q/DQ
    with pytest.raises(ModelError, match="opset 21"):
        convert_model(m, ConvertConfig("int16-lut", range=(-4.0, 4.0)))
    for o in m.opset_import:
        if o.domain == "":
            o.version = 21
    res = convert_model(m, ConvertConfig("int16-lut", range=(-4.0, 4.0)))
    site = find_gelu_sites(m)[0]
    spec = spec_from_json(res.manifest.converted[0].spec)
    feeds = sample_feeds(m)
    x = run_exposing(m, feeds, [site.input])[site.input]
    got = run_exposing(res.model, feeds, [site.output])[site.output]
    np.testing.assert_array_equal(got, spec.evaluate(x))


# -- all-MiniLM-L6-v2 ------------------------------------------------------------------------------
MINILM_VARIANTS = ["opset17", "opset20", "dynamo", "ort-optimized", "qdq"]


@pytest.fixture(scope="session")
def minilm_batch() -> dict[str, np.ndarray]:
    from gelu_quant.models.minilm import tokenize

    return tokenize(
        [
            "The quick brown fox jumps over the lazy dog.",
            "Lookup tables replace GELU on int8 edge hardware.",
            "Calibration measures where activations live.",
        ],
        32,
    )


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _embed(sess: ort.InferenceSession, batch: dict[str, np.ndarray]) -> np.ndarray:
    feeds = {i.name: batch[i.name] for i in sess.get_inputs()}
    h = sess.run(None, feeds)[0]
    mask = batch["attention_mask"][..., None].astype(np.float64)
    return (h * mask).sum(1) / mask.sum(1)


@pytest.mark.slow
@pytest.mark.parametrize("variant", MINILM_VARIANTS)
def test_minilm_variant_converted(variant: str, tmp_path: Path, minilm_batch) -> None:
    from gelu_quant.models.minilm import minilm_onnx

    src = minilm_onnx(variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = convert_file(src, tmp_path / "m.onnx", ConvertConfig("int8-lut", range=(-12, 12)))
    man = res.manifest
    assert len(man.converted) == 6 and not man.skipped
    if variant == "qdq":
        assert all(s.mode == "qdq" for s in man.converted)
    out = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert out.ir_version <= 10
    assert sum(1 for n in out.graph.node if n.domain == DOMAIN) == 6
    if variant == "dynamo":
        assert (tmp_path / "m.onnx.data").is_file()
    original = onnx.load(str(src), load_external_data=False)
    kept_nodes_identical(original, type(res)(out, man))

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    converted = _embed(_session(tmp_path / "m.onnx"), minilm_batch)
    if variant != "qdq":
        assert cos(_embed(_session(src), minilm_batch), converted).min() > 0.98
        return
    # QDQ: every GeluLut gives the table entry of the codes it reads ...
    m = onnx.load(str(tmp_path / "m.onnx"))
    luts = [
        (next(n for n in m.graph.node if n.name in s.added_nodes and n.domain == DOMAIN), s)
        for s in man.converted
    ]
    names = [t for lut, _ in luts for t in (lut.input[0], lut.output[0])]
    got = run_exposing(m, minilm_batch_for(m, minilm_batch), names)
    for lut, s in luts:
        spec = spec_from_json(s.spec)
        np.testing.assert_array_equal(got[lut.output[0]], spec.lookup(got[lut.input[0]]))
    # ... and the model is at least as close to fp32 as the QDQ model it came from (which
    # also quantizes GELU's insides: erf, 1 + erf, x·(1 + erf))
    fp32 = _embed(_session(minilm_onnx("opset17")), minilm_batch)
    qdq = _embed(_session(src), minilm_batch)
    assert cos(fp32, converted).mean() >= cos(fp32, qdq).mean() - 0.02


def minilm_batch_for(m: onnx.ModelProto, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: batch[i.name] for i in m.graph.input if i.name in batch}


def test_manifest_records_the_config_as_given(tmp_path: Path) -> None:
    """The manifest's config is the one passed (convert_file checks the written file, not an
    in-memory copy with the checker off), with the ranges file's name."""
    src = tmp_path / "m.onnx"
    onnx.save_model(load_fixture("erf_torchscript"), str(src))
    rf = tmp_path / "ranges.json"
    _ranges_file(rf, src, -7.0, 3.0)
    cfg = ConvertConfig("int8-lut", method=None, tail_cut=False)
    convert_file(src, tmp_path / "o.onnx", cfg, ranges=load_ranges(rf))
    written = json.loads((tmp_path / "o.manifest.json").read_text())["config"]
    assert written == {**cfg.to_json(), "ranges_file": "ranges.json"}
    assert written["check"] is True
