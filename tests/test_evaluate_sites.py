"""Per-site comparison beyond the basics: QDQ sites compared on their quantized output, ranges
from the conversion manifest (real converter on a small model), plots, external data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _eval_models as em
import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from gelu_quant.errors import BadInputError
from gelu_quant.evaluate import probe
from gelu_quant.evaluate.accuracy_report import to_markdown
from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
from gelu_quant.graph.sites import GeluSite, QuantInfo

QDQ_TEXT = """
<ir_version: 10, opset_import: ["" : 20]>
qdq (float[N, 16] x) => (float[N, 16] y) {
  s_in = Constant<value = float {0.05}>()
  z_in = Constant<value = int8 {0}>()
  s_out = Constant<value = float {0.03}>()
  z_out = Constant<value = int8 {-100}>()
  xq = QuantizeLinear(x, s_in, z_in)
  xd = DequantizeLinear(xq, s_in, z_in)
  g = Gelu(xd)
  yq = QuantizeLinear(g, s_out, z_out)
  y = DequantizeLinear(yq, s_out, z_out)
}
"""
QDQ_SITE = GeluSite(
    id="gelu0",
    form="exact",
    spelling="onnx:Gelu",
    input="xd",
    output="g",
    nodes=("gelu",),
    qdq_in=QuantInfo("xq", 0.05, 0, "int8", "dq"),
    qdq_out=QuantInfo("yq", 0.03, -100, "int8", "q"),
)


def _run(model: onnx.ModelProto, x: np.ndarray, extra: list[str]) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in extra:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT8, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {"x": x}), strict=True))


def test_qdq_site_without_float_output_is_compared_dequantized(tmp_path: Path) -> None:
    ref = onnx.parser.parse_model(QDQ_TEXT)
    # the candidate writes yq straight from a different float tensor: no tensor named g
    cand = onnx.parser.parse_model(
        QDQ_TEXT.replace("g = Gelu(xd)", "r = Relu(xd)").replace(
            "QuantizeLinear(g,", "QuantizeLinear(r,"
        )
    )
    rp, cp = em.save(ref, tmp_path / "ref.onnx"), em.save(cand, tmp_path / "cand.onnx")
    x = np.random.default_rng(5).normal(0, 2, size=(64, 16)).astype(np.float32)
    rep = evaluate(rp, cp, em.batches(x, 16), EvalConfig(sites=(QDQ_SITE,), threads=1))
    s = rep.site("gelu0")
    assert s.comparable and s.compared == "yq (dequantized)" and s.errors is not None
    a = (_run(ref, x, ["yq"])["yq"].astype(np.float64) + 100) * np.float64(np.float32(0.03))
    b = (_run(cand, x, ["yq"])["yq"].astype(np.float64) + 100) * np.float64(np.float32(0.03))
    e = b - a
    assert s.errors.max_abs_error == pytest.approx(float(np.abs(e).max()), rel=1e-12)
    assert s.errors.rmse == pytest.approx(float(np.sqrt(np.mean(e * e))), rel=1e-12)
    assert s.input_range == pytest.approx((-128 * 0.05, 127 * 0.05))  # from the candidate's Q


def test_manifest_ranges_with_the_real_converter(tmp_path: Path) -> None:
    from gelu_quant.graph.convert import ConvertConfig, convert_file

    src = em.save(em.build(), tmp_path / "ref.onnx")
    dst = tmp_path / "ref.gq.onnx"
    convert_file(src, dst, ConvertConfig("int8-lut", range=(-16.0, 16.0)))
    man = tmp_path / "ref.gq.manifest.json"
    want = {s["id"]: tuple(s["range"]) for s in json.loads(man.read_text())["sites"]}
    cfg = EvalConfig(threads=1, manifest=man, classification_outputs=("logits",))
    rep = evaluate(src, dst, em.batches(em.data(64), 32), cfg)
    assert sorted(s.id for s in rep.sites) == ["gelu0", "gelu1", "gelu2"]  # discovered
    for s in rep.sites:
        assert s.comparable and s.errors is not None and s.input_range == want[s.id]
        assert 0 < s.errors.max_abs_error < 0.2  # int8 table error, not a broken graph
    sq = [s.errors.sqnr_db for s in rep.sites if s.errors is not None]
    assert sq == sorted(sq)


def test_plots_are_written_and_linked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ref = em.save(em.build(), tmp_path / "ref.onnx")
    cand = em.save(em.variant(em.RELU_TEXT), tmp_path / "relu.onnx")
    cfg = EvalConfig(
        sites=em.SITES,
        threads=1,
        plots_dir=tmp_path / "plots",
        site_ranges=(("gelu1", -3.0, 3.0),),
    )
    rep = evaluate(ref, cand, em.batches(em.data(64), 32), cfg)
    for s in rep.sites:
        assert s.plot is not None
        assert Path(s.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep.site("gelu1").input_range == (-3.0, 3.0)
    md = to_markdown(rep, markdown_path=tmp_path / "summary.md")
    assert "[plot](plots/gelu1.png)" in md


def test_plots_without_matplotlib_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    ref = em.save(em.build(), tmp_path / "ref.onnx")
    with pytest.raises(BadInputError, match="needs matplotlib"):
        evaluate(ref, ref, em.batches(em.data(4), 4), EvalConfig(plots_dir=tmp_path / "p"))


@pytest.mark.parametrize("force_external_probe", [False, True])
def test_external_data_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force_external_probe: bool
) -> None:
    if force_external_probe:  # take the > 2 GB path: probe copy saved with external data
        monkeypatch.setattr(probe, "_SAFE_INLINE", 0)
    ref = em.build()
    onnx.save(
        ref,
        str(tmp_path / "ref.onnx"),
        save_as_external_data=True,
        size_threshold=0,
        location="ref.onnx.data",
    )
    assert (tmp_path / "ref.onnx.data").is_file()
    cand = em.save(em.variant(em.RELU_TEXT), tmp_path / "relu.onnx")
    cfg = EvalConfig(sites=em.SITES, threads=1, classification_outputs=("logits",))
    rep = evaluate(tmp_path / "ref.onnx", cand, em.batches(em.data(32), 16), cfg)
    assert rep.sites[0].id == "gelu1"
    assert rep.site("gelu0").errors is not None
    assert rep.site("gelu0").errors.max_abs_error == 0.0
