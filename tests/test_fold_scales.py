"""``convert --groups K --fold-scales`` on the digits ViT: grouped tables' per-channel scales
folded into the neighbouring MatMul weights and biases.

Oracles: the folded weights against the original weights and the spec's own per-channel
qparams (numpy), the ORT outputs of the unfolded grouped model, and the node counts.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.cli.main import main
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.models.digits_vit import digits_test_data, digits_train_data, digits_vit_path


@pytest.fixture(scope="module")
def ranges(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("fold")
    np.savez(d / "fit.npz", pixels=digits_train_data()[0])
    calibrate_model(digits_vit_path(), d / "fit.npz", d / "r.json", threads=1)
    return load_ranges(d / "r.json")


def _run(path: object, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(["logits"], {"pixels": x})[0], np.float64)


def test_folded_model_is_the_grouped_model(ranges, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = digits_vit_path()
    g = convert_file(src, tmp_path / "g.onnx", ConvertConfig("int8-lut", groups=4), ranges=ranges)
    f = convert_file(
        src, tmp_path / "f.onnx", ConvertConfig("int8-lut", groups=4, fold_scales=True),
        ranges=ranges,
    )  # fmt: skip
    orig = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    folded = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "f.onnx")).graph.initializer
    }
    for rec in f.manifest.converted:
        assert rec.folded is not None
        spec = spec_from_json(rec.spec or {})
        assert isinstance(spec, GroupedLutSpec)
        s_in = np.array([spec.groups[k].in_qparams.scale for k in spec.channel_group], np.float64)
        z_in = np.array([spec.groups[k].in_qparams.zero_point for k in spec.channel_group])
        oq = [spec.groups[k].out_qparams for k in spec.channel_group]
        s_out = np.array([q.scale for q in oq if q is not None], np.float64)
        z_out = np.array([q.zero_point for q in oq if q is not None], np.float64)
        fi, fo = rec.folded["input"], rec.folded["output"]
        assert fi["folded"] and fo["folded"], rec.folded
        # producer: W' = W / s_in per column, b' = b / s_in + z_in
        w, w2 = orig[fi["weight"]], folded[fi["weight"] + "_gq_folded"]
        np.testing.assert_allclose(w2 * s_in, w, rtol=2e-7, atol=0)
        b, b2 = orig[fi["bias"]], folded[fi["bias"] + "_gq_folded"]
        np.testing.assert_allclose(b2, b / s_in + z_in, rtol=2e-7, atol=1e-5)
        # consumer: V' = diag(s_out) V, c' = c - (z_out s_out) V
        v, v2 = orig[fo["weight"]], folded[fo["weight"] + "_gq_folded"]
        np.testing.assert_allclose(v2, s_out[:, None] * v, rtol=2e-7, atol=0)
        c, c2 = orig[fo["bias"]], folded[fo["bias"] + "_gq_folded"]
        np.testing.assert_allclose(c2, c - (z_out * s_out) @ v, rtol=1e-6, atol=1e-6)
        for side in (fi, fo):
            for k in ("int8_weight_error_before", "int8_weight_error_after"):
                assert 0 < side[k]["per_channel"] <= side[k]["per_tensor"] < 1
    # Div, Round, zero-point Add, Sub and Mul gone at each of the two sites (the per-tensor
    # QuantizeLinear with scale 1 rounds itself); the old weights too
    assert len(onnx.load(str(tmp_path / "g.onnx")).graph.node) - len(
        onnx.load(str(tmp_path / "f.onnx")).graph.node
    ) == 5 * len(f.manifest.converted)
    assert fi["weight"] not in folded and fo["weight"] not in folded
    # same model up to float32 rounding in the folded sums
    x = digits_test_data()[0]["pixels"]
    yg, yf = _run(tmp_path / "g.onnx", x), _run(tmp_path / "f.onnx", x)
    assert np.max(np.abs(yf - yg)) <= 2e-2 * np.max(np.abs(yg))
    assert np.mean(yf.argmax(1) == yg.argmax(1)) >= 0.995
    assert g.manifest.converted[0].folded is None


def test_float_output_tables_fold_the_input_side_only(ranges, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = convert_file(
        digits_vit_path(), tmp_path / "h.onnx",
        ConvertConfig("int8-lut-fp16out", groups=2, fold_scales=True), ranges=ranges,
    )  # fmt: skip
    rec = res.manifest.converted[0]
    assert rec.folded is not None
    assert rec.folded["input"]["folded"] is True
    assert rec.folded["output"]["folded"] is False and "Sub" in rec.folded["output"]["reason"]
    x = digits_test_data()[0]["pixels"]
    ref = _run(digits_vit_path(), x)
    assert np.mean(_run(tmp_path / "h.onnx", x).argmax(1) == ref.argmax(1)) >= 0.99


def test_fold_needs_groups(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = CliRunner().invoke(
        main,
        ["convert", str(digits_vit_path()), "--range", "-4", "4", "--target", "int8-lut",
         "--fold-scales", "-o", str(tmp_path / "x.onnx")],
    )  # fmt: skip
    assert r.exit_code == 2 and "needs --groups" in r.output
