"""The consumer correction: the row sample calibrate keeps, the ridge fit, and the graph pass.

Oracles: the ridge fit against an augmented least-squares problem solved by ``np.linalg.lstsq``
(written from the definition in the module docstring, not from the code's eigen-solution); the
row sample against the definition (the rows with the smallest keys); the converted models run
in ONNX Runtime against the fp32 model on inputs never calibrated on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _calib_models import _erf_gelu
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import MethodParams, StatsFile, load_ranges
from gelu_quant.calib.row_sample import RowSample
from gelu_quant.cli.main import main
from gelu_quant.graph.consumer_fit import HOLDOUT_EVERY, MIN_GAIN, fit_consumer
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.token_mask import token_mask

C_IN, C, C_OUT = 12, 48, 10


# -- the ridge fit -------------------------------------------------------------------------
def _oracle_ridge(q: np.ndarray, e: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """min ‖[q 1]·[ΔV; Δc] − e‖² + λ·d·‖ΔV‖², d = tr(centred qᵀq) / C, by lstsq on the
    augmented system (the intercept unpenalised)."""
    qc = q - q.mean(axis=0)
    d = np.trace(qc.T @ qc) / q.shape[1]
    n, c = q.shape
    a = np.block([[q, np.ones((n, 1))], [math.sqrt(lam * d) * np.eye(c), np.zeros((c, 1))]])
    b = np.vstack([e, np.zeros((c, e.shape[1]))])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol[:-1], sol[-1]


def _linear_error_case(
    n: int, seed: int, rows_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose table error is partly a linear function of the table output (``seed``: the
    error's law and the weight; ``rows_seed``: which rows)."""
    law = np.random.default_rng(seed)
    mix = law.standard_normal((C, C)) * 0.1
    v = law.standard_normal((C, C_OUT))
    rng = np.random.default_rng([seed, rows_seed])
    q = rng.standard_normal((n, C))
    y = q + q @ mix + 0.01 * rng.standard_normal((n, C)) + 0.3
    return q, y, v


def test_fit_equals_the_ridge_oracle() -> None:
    q, y, v = _linear_error_case(600, 0)
    fit = fit_consumer(q, y, v, intercept=True, ridges=(0.01,))
    assert fit.applied and fit.ridge == 0.01 and fit.rows == 600
    dw, db = _oracle_ridge(q, (y - q) @ v, 0.01)
    assert fit.delta_w is not None and fit.delta_b is not None
    np.testing.assert_allclose(fit.delta_w, dw, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fit.delta_b, db, rtol=1e-7, atol=1e-9)
    # the corrected layer is far closer to the exact one than the uncorrected, on new rows
    q2, y2, _ = _linear_error_case(400, 0, rows_seed=1)
    before = np.sum(((y2 - q2) @ v) ** 2)
    after = np.sum((y2 @ v - (q2 @ (v + fit.delta_w) + fit.delta_b)) ** 2)
    assert after < 0.05 * before


def test_fit_on_some_channels_changes_only_their_rows() -> None:
    q, y, v = _linear_error_case(600, 4)
    cols = np.array([3, 17, 40])
    fit = fit_consumer(q, y, v, intercept=True, ridges=(0.01,), predictors=cols)
    assert fit.applied and fit.delta_w is not None and fit.delta_b is not None
    others = np.setdiff1d(np.arange(C), cols)
    assert np.all(fit.delta_w[others] == 0.0)
    # oracle: the ridge on the chosen channels' outputs alone, against the whole error
    qc = q[:, cols] - q[:, cols].mean(axis=0)
    d = np.trace(qc.T @ qc) / cols.size
    n = q.shape[0]
    a = np.block(
        [[q[:, cols], np.ones((n, 1))], [math.sqrt(0.01 * d) * np.eye(3), np.zeros((3, 1))]]
    )
    b = np.vstack([(y - q) @ v, np.zeros((3, C_OUT))])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(fit.delta_w[cols], sol[:-1], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fit.delta_b, sol[-1], rtol=1e-7, atol=1e-9)
    assert not fit_consumer(q, y, v, intercept=True, predictors=np.array([], int)).applied


def test_fit_without_intercept_has_no_bias() -> None:
    q, y, v = _linear_error_case(600, 1)
    fit = fit_consumer(q, y, v, intercept=False, ridges=(0.03,))
    assert fit.applied and fit.delta_b is None
    # oracle: the same ridge without the ones column and without centring
    d = np.trace(q.T @ q) / C
    dw = np.linalg.solve(q.T @ q + 0.03 * d * np.eye(C), q.T @ ((y - q) @ v))
    np.testing.assert_allclose(fit.delta_w, dw, rtol=1e-7, atol=1e-9)


def test_fit_keeps_the_layer_when_the_error_is_noise() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((400, C))
    y = q + rng.standard_normal((400, C))  # the error has nothing to do with q
    fit = fit_consumer(q, y, rng.standard_normal((C, C_OUT)), intercept=True)
    assert not fit.applied and fit.delta_w is None
    # no ridge gains more than MIN_GAIN over the uncorrected layer on the held-out rows
    assert all(v > 1.0 - MIN_GAIN for v in fit.heldout_error.values())


def test_fit_chooses_on_held_out_rows_and_needs_enough_rows() -> None:
    q, y, v = _linear_error_case(600, 3)
    fit = fit_consumer(q, y, v, intercept=True)
    best = min(fit.heldout_error, key=fit.heldout_error.__getitem__)
    assert fit.ridge == float(best) and fit.heldout_error[best] < 0.1
    # the held-out score is computed on every HOLDOUT_EVERY-th row only: changing a fitted
    # row (not held out) changes the fit, not the rows it is scored on
    assert HOLDOUT_EVERY == 4
    small = fit_consumer(q[:40], y[:40], v, intercept=True)
    assert not small.applied and small.rows == 40
    with pytest.raises(ValueError):
        fit_consumer(q, y[:, :-1], v, intercept=True)


# -- the row sample ------------------------------------------------------------------------
def _offer_all(sample: RowSample, rows: np.ndarray, seed: int, step: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(0, len(rows), step):
        sample.update(rows[i : i + step], rng)


def test_row_sample_is_the_smallest_keys_and_merges_exactly() -> None:
    idx = np.arange(3000)
    # rows identify themselves in float16-exact integers (< 2048): index = 1000 a + b
    rows = np.stack([idx // 1000, idx % 1000, -idx % 7], axis=1).astype(np.float32)
    whole = RowSample(100)
    _offer_all(whole, rows, 7, 64)
    # oracle: draw the same keys in the same order and keep the 100 smallest
    rng = np.random.default_rng(7)
    keys = np.concatenate([rng.random(len(rows[i : i + 64])) for i in range(0, 3000, 64)])
    want = np.sort(np.argsort(keys)[:100])
    assert whole.rows.shape == (100, 3) and whole.seen == 3000
    got = whole.rows[:, 0].astype(np.int64) * 1000 + whole.rows[:, 1].astype(np.int64)
    np.testing.assert_array_equal(np.sort(got), want)
    a, b = RowSample(100), RowSample(100)
    _offer_all(a, rows[:1200], 1, 50)
    _offer_all(b, rows[1200:], 2, 50)
    ab, ba = a.copy(), b.copy()
    ab.merge(b)
    ba.merge(a)
    np.testing.assert_array_equal(ab.rows, ba.rows)
    np.testing.assert_array_equal(ab.keys, ba.keys)
    assert ab.seen == ba.seen == 3000
    union_keys = np.concatenate([a.keys, b.keys])
    np.testing.assert_array_equal(ab.keys, np.sort(union_keys)[:100])


def test_row_sample_is_uniform_and_skips_padding_and_nonfinite_rows() -> None:
    n, cap = 2000, 200
    rows = np.arange(n, dtype=np.float32)[:, None]
    means = []
    for seed in range(30):
        s = RowSample(cap)
        _offer_all(s, rows, seed, 128)
        means.append(float(s.rows.astype(np.float64).mean()))
    # the mean index of a uniform sample without replacement: (n-1)/2, sd ≈ n/sqrt(12 cap)
    sd = n / math.sqrt(12 * cap) * math.sqrt(1 - cap / n) / math.sqrt(len(means))
    assert abs(np.mean(means) - (n - 1) / 2) < 4 * sd
    x = np.ones((2, 5, 4), np.float32)
    x[0, 3:] = 7.0  # padding
    x[1, 1, 2] = np.nan
    mask = token_mask({"attention_mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}, x.shape)
    assert mask is not None and mask.sum() == 8
    s = RowSample(100)
    s.update(x, np.random.default_rng(0), mask)
    assert s.seen == 8 and s.rows.shape == (7, 4)  # 8 real rows, one with a NaN
    assert np.all(s.rows == 1.0)
    assert token_mask({}, x.shape) is None
    assert token_mask({"attention_mask": np.ones((2, 4))}, x.shape) is None


# -- the graph pass ------------------------------------------------------------------------
def _ffn_model() -> onnx.ModelProto:
    """``x → MatMul(W1) + b1 → GELU (erf pattern) → MatMul(W2) + b2 → y``; channel 0 of the
    pre-activation carries rare large outliers that a clipped range cannot represent, flagged
    by the sign of input 0."""
    rng = np.random.default_rng(11)
    w1 = (rng.standard_normal((C_IN, C)) * 0.6).astype(np.float32)
    w1[0, :] = 0.0
    w1[0, :2] = 9.0  # input 0 drives channels 0 and 1 far out
    b1 = (rng.standard_normal(C) * 0.3 - 0.5).astype(np.float32)
    w2 = (rng.standard_normal((C, C_OUT)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(C_OUT) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["p"], name="add1"),
    ]
    _erf_gelu(nodes, "p", "g", "gelu")
    nodes += [
        helper.make_node("MatMul", ["g", "w2"], ["o"], name="mm2"),
        helper.make_node("Add", ["o", "b2"], ["y"], name="add2"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    g = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", C_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", C_OUT])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def _inputs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C_IN)).astype(np.float32)
    x[:, 0] = np.where(rng.random(n) < 0.03, 2.0, 0.0)  # 3 % of rows carry the outliers
    return x


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0], np.float64)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cc")
    model = d / "ffn.onnx"
    onnx.save(_ffn_model(), model)
    np.savez(d / "cal.npz", x=_inputs(4096, 0))
    # percentile 99.5 clips the outliers (0.1 % of the values), as entropy does on MiniLM
    calibrate_model(
        model,
        d / "cal.npz",
        d / "ranges.json",
        method="percentile",
        params=MethodParams(percentile=99.5),
        batch_size=256,
    )
    return model, d / "ranges.json"


def test_correction_brings_the_layer_back_on_held_out_inputs(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    model, ranges_path = calibrated
    ranges = load_ranges(ranges_path)
    assert (ranges_path.parent / "ranges.sample.npz").exists()
    sample = ranges.sample_for("gelu0")
    assert sample is not None and sample.shape == (4096, C) and sample.dtype == np.float16
    outs = {}
    for name, correct in (("on", True), ("off", False)):
        res = convert_file(
            model,
            tmp_path / f"{name}.onnx",
            ConvertConfig(target="int8-lut", correct_consumers=correct),
            ranges=ranges,
        )
        outs[name] = res.manifest.sites[0]
    on, off = outs["on"], outs["off"]
    assert off.corrected is None
    assert on.corrected is not None and on.corrected["applied"] is True
    assert on.corrected["weight"] == "w2" and on.corrected["bias"] == "b2"
    # the channels with values outside the range include the ones input 0 drives far out;
    # only their rows of W2 move
    channels = on.corrected["channels"]
    assert {0, 1} <= set(channels)
    assert on.spec == off.spec  # the same table: only the next layer moved
    x = _inputs(2048, 99)  # never calibrated on
    ref = _run(model, x)
    err_on = np.mean((_run(tmp_path / "on.onnx", x) - ref) ** 2)
    err_off = np.mean((_run(tmp_path / "off.onnx", x) - ref) ** 2)
    assert err_on < 0.5 * err_off
    # the corrected model's weights are the fp32 weights plus the fit: the rest is untouched
    m = onnx.load(tmp_path / "on.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert "w2" not in inits and "b2" not in inits and "w1" in inits and "b1" in inits
    w2 = numpy_helper.to_array(next(t for t in _ffn_model().graph.initializer if t.name == "w2"))
    kept = np.setdiff1d(np.arange(C), channels)
    np.testing.assert_array_equal(inits["w2_gq_corrected"][kept], w2[kept])
    assert np.any(inits["w2_gq_corrected"][:2] != w2[:2])


def test_missing_or_foreign_sample_converts_without_correction(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    model, ranges_path = calibrated
    moved = tmp_path / "ranges.json"
    moved.write_bytes(ranges_path.read_bytes())  # the sample file stays behind
    res = convert_file(
        model, tmp_path / "a.onnx", ConvertConfig(target="int8-lut"), ranges=load_ranges(moved)
    )
    rec = res.manifest.sites[0]
    assert rec.corrected is not None and rec.corrected["applied"] is False
    assert "cannot be read" in rec.corrected["reason"]
    assert any("consumer correction not applied" in n for n in res.manifest.notes)
    (tmp_path / "ranges.sample.npz").write_bytes(b"not the sample")
    res = convert_file(
        model, tmp_path / "b.onnx", ConvertConfig(target="int8-lut"), ranges=load_ranges(moved)
    )
    assert "does not match" in str(res.manifest.sites[0].corrected["reason"])  # type: ignore[index]


def test_cli_sample_rows_and_no_correction(tmp_path: Path) -> None:
    model = tmp_path / "ffn.onnx"
    onnx.save(_ffn_model(), model)
    np.savez(tmp_path / "cal.npz", x=_inputs(1024, 5))
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "calibrate",
            str(model),
            "--data",
            str(tmp_path / "cal.npz"),
            "-o",
            str(tmp_path / "r0.json"),
            "--sample-rows",
            "0",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "r0.sample.npz").exists()
    assert "sample" not in json.loads((tmp_path / "r0.json").read_text())
    r = runner.invoke(
        main,
        [
            "calibrate",
            str(model),
            "--data",
            str(tmp_path / "cal.npz"),
            "-o",
            str(tmp_path / "r.json"),
            "--sample-rows",
            "300",
            "--save-stats",
            str(tmp_path / "s.npz"),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "r.json").read_text())["sample"]
    assert info["rows"] == {"gelu0": 300} and info["population"] == {"gelu0": 1024}
    # the statistics file keeps the sample: merging two copies keeps 300 rows of 2048
    sf = StatsFile.load(tmp_path / "s.npz")
    sf.merge(StatsFile.load(tmp_path / "s.npz"))
    assert sf.collected.samples_of["gelu0"].seen == 2048
    assert sf.collected.samples_of["gelu0"].rows.shape == (300, C)
    for flag in ([], ["--no-consumer-correction"]):
        out = tmp_path / f"m{len(flag)}.onnx"
        r = runner.invoke(
            main,
            [
                "convert",
                str(model),
                "--ranges",
                str(tmp_path / "r.json"),
                "--target",
                "int8-lut",
                "-o",
                str(out),
                "--quiet",
                *flag,
            ],
        )
        assert r.exit_code == 0, r.output
        man = json.loads(out.with_name(out.stem + ".manifest.json").read_text())
        got = man["sites"][0].get("corrected")
        if flag:
            assert got is None
        else:  # fitted on the 300 sampled rows, or not fitted: the manifest says which, and why
            assert got.get("rows", 300) == 300 and isinstance(got["applied"], bool)
            assert got["applied"] or got["reason"]
