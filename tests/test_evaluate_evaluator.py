"""evaluate() on hand-made models with known perturbations; oracles computed here from plain ORT
runs over the whole data set (not batched) and float64 numpy."""

from __future__ import annotations

import math
from pathlib import Path

import _eval_models as em
import numpy as np
import onnxruntime as ort
import pytest

from gelu_quant.errors import BadInputError, DataError, ModelError
from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
from gelu_quant.evaluate.gate import GateConfig
from gelu_quant.numerics import gelu_exact

SITES = em.SITES


def run_plain(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {"x": x}), strict=True))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval_models")
    return {
        "ref": em.save(em.build(), d / "ref.onnx"),
        "add": em.save(em.variant(em.ADD_TEXT), d / "add.onnx"),
        "relu": em.save(em.variant(em.RELU_TEXT), d / "relu.onnx"),
    }


CFG = EvalConfig(sites=SITES, threads=1, classification_outputs=("logits",))


def test_add_constant_gives_exact_error_metrics(models: dict[str, Path]) -> None:
    x = em.data(200)
    rep = evaluate(models["ref"], models["add"], em.batches(x, 32), CFG)
    y = run_plain(models["ref"], x)["hidden"].astype(np.float64)
    c = em.ADD_C
    h = rep.output("hidden")
    assert h.samples == 200 and rep.samples == 200 and rep.batches == 7
    assert h.errors.elements == y.size
    assert h.errors.max_abs_error == c
    assert h.errors.mean_abs_error == c
    assert h.errors.rmse == c
    expected_sqnr = 10 * math.log10(math.fsum((y * y).ravel()) / (y.size * c * c))
    assert h.errors.sqnr_db == pytest.approx(expected_sqnr, rel=1e-12)
    cos = [float(r @ (r + c) / (np.linalg.norm(r) * np.linalg.norm(r + c))) for r in y]
    assert h.cosine_mean == pytest.approx(sum(cos) / len(cos), rel=1e-12)
    assert h.cosine_min == pytest.approx(min(cos), rel=1e-12)
    # logits untouched: zero error, infinite SQNR, full agreement, KL 0
    lg = rep.output("logits")
    assert lg.kind == "classification" and h.kind == "tensor"
    assert lg.errors.max_abs_error == 0.0 and lg.errors.sqnr_db == math.inf
    assert lg.top1_agreement == 1.0 and lg.kl_divergence == 0.0
    # every site is compared and identical
    assert [s.comparable for s in rep.sites] == [True] * 3
    assert all(s.errors is not None and s.errors.max_abs_error == 0.0 for s in rep.sites)


def test_relu_site_is_ranked_first_with_its_own_error(models: dict[str, Path]) -> None:
    x = em.data(200)
    rep = evaluate(models["ref"], models["relu"], em.batches(x, 50), CFG)
    assert rep.sites[0].id == "gelu1"
    first = rep.sites[0].errors
    assert first is not None
    # oracle: h1 in float64 from the weights; ReLU against exact GELU
    h1 = x.astype(np.float64) @ em.weights()["w1"].astype(np.float64)
    g = gelu_exact(h1)
    err = np.maximum(h1, 0.0) - g
    assert first.max_abs_error == pytest.approx(float(np.abs(err).max()), rel=1e-5)
    want = 10 * math.log10(float((g * g).sum()) / float((err * err).sum()))
    assert first.sqnr_db == pytest.approx(want, abs=1e-4)
    for s in rep.sites[1:]:
        assert s.errors is not None and s.errors.max_abs_error == 0.0
    # the model outputs move; metrics match a whole-set oracle from plain ORT runs
    r, c = run_plain(models["ref"], x), run_plain(models["relu"], x)
    lr, lc = r["logits"].astype(np.float64), c["logits"].astype(np.float64)
    lg = rep.output("logits")
    assert lg.errors.max_abs_error == pytest.approx(float(np.abs(lc - lr).max()), rel=1e-12)
    assert lg.top1_agreement == pytest.approx(float(np.mean(lr.argmax(1) == lc.argmax(1))))
    p = np.exp(lr) / np.exp(lr).sum(1, keepdims=True)
    q = np.exp(lc) / np.exp(lc).sum(1, keepdims=True)
    kl = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert lg.kl_divergence == pytest.approx(kl, rel=1e-9, abs=1e-15)


def test_labels_give_both_accuracies_and_the_drop(models: dict[str, Path], tmp_path: Path) -> None:
    x = em.data(120)
    r, c = run_plain(models["ref"], x), run_plain(models["relu"], x)
    labels = r["logits"].argmax(1).copy()
    labels[::5] = (labels[::5] + 1) % 4  # make the reference imperfect
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(str(v) for v in labels) + "\n")
    cfg = EvalConfig(sites=SITES, threads=1, classification_outputs=("logits",), labels=path)
    rep = evaluate(models["ref"], models["relu"], em.batches(x, 25), cfg)
    lg = rep.output("logits")
    acc_r = float(np.mean(r["logits"].argmax(1) == labels))
    acc_c = float(np.mean(c["logits"].argmax(1) == labels))
    assert lg.accuracy_reference == pytest.approx(acc_r)
    assert lg.accuracy_candidate == pytest.approx(acc_c)
    assert lg.accuracy_drop == pytest.approx(100 * (acc_r - acc_c))
    assert lg.labels == 120


def test_label_count_must_match_the_samples(models: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, np.zeros(99, dtype=np.int64))
    cfg = EvalConfig(sites=SITES, threads=1, classification_outputs=("logits",), labels=path)
    with pytest.raises(DataError, match="99 labels"):
        evaluate(models["ref"], models["relu"], em.batches(em.data(100), 40), cfg)


def test_missing_site_tensor_is_not_comparable(models: dict[str, Path], tmp_path: Path) -> None:
    renamed = em.variant(
        {"g2 = Gelu(h2)": "g2x = Gelu(h2)", "s = Add(s01, g2)": "s = Add(s01, g2x)"}
    )
    cand = em.save(renamed, tmp_path / "renamed.onnx")
    rep = evaluate(models["ref"], cand, em.batches(em.data(40), 16), CFG)
    s2 = rep.site("gelu2")
    assert not s2.comparable and s2.errors is None and "g2" in (s2.reason or "")
    assert rep.sites[-1].id == "gelu2"
    assert rep.output("logits").errors.max_abs_error == 0.0


def test_interface_mismatch_names_what_differs(models: dict[str, Path], tmp_path: Path) -> None:
    other = em.variant(
        {"float[N, 8] hidden)": "float[N, 8] hidden2)", "hidden = Div": "hidden2 = Div"}
    )
    cand = em.save(other, tmp_path / "other.onnx")
    with pytest.raises(ModelError) as e:
        evaluate(models["ref"], cand, em.batches(em.data(8), 8), CFG)
    msg = str(e.value)
    assert "outputs only in the reference: hidden" in msg
    assert "outputs only in the candidate: hidden2" in msg
    dtype = em.variant(
        {
            "float[N, 8] x)": "double[N, 8] x)",
            "h0 = MatMul(x, w0)": "xf = Cast<to = 1>(x)\n  h0 = MatMul(xf, w0)",
            "h1 = MatMul(x, w1)": "h1 = MatMul(xf, w1)",
            "h2 = MatMul(x, w2)": "h2 = MatMul(xf, w2)",
        }
    )
    cand2 = em.save(dtype, tmp_path / "double.onnx")
    with pytest.raises(
        ModelError, match=r"input 'x': reference tensor\(float\), candidate tensor\(double\)"
    ):
        evaluate(models["ref"], cand2, em.batches(em.data(8), 8), CFG)


def test_gate_verdict_and_inapplicable_thresholds(models: dict[str, Path]) -> None:
    x = em.data(64)
    ok = EvalConfig(
        sites=SITES,
        threads=1,
        classification_outputs=("logits",),
        gate=GateConfig(min_cosine=0.5, min_top1_agreement=0.5),
    )
    rep = evaluate(models["ref"], models["relu"], em.batches(x, 32), ok)
    assert rep.passed
    names = [c.name for c in rep.verdict.checks]
    assert names == ["min_cosine[logits]", "min_cosine[hidden]", "min_top1_agreement[logits]"]
    strict = EvalConfig(
        sites=SITES, threads=1, classification_outputs=("logits",), gate=GateConfig(min_sqnr=200.0)
    )
    rep2 = evaluate(models["ref"], models["relu"], em.batches(x, 32), strict)
    assert not rep2.passed and len(rep2.verdict.failed) == 2
    drop = EvalConfig(
        sites=SITES,
        threads=1,
        classification_outputs=("logits",),
        gate=GateConfig(max_accuracy_drop=1.0),
    )
    with pytest.raises(BadInputError, match="needs --labels"):
        evaluate(models["ref"], models["relu"], em.batches(x, 32), drop)


def test_no_batches_is_a_data_error(models: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="no batches"):
        evaluate(models["ref"], models["relu"], [], CFG)


def test_streaming_equals_one_batch(models: dict[str, Path]) -> None:
    x = em.data(90)
    a = evaluate(models["ref"], models["relu"], em.batches(x, 7), CFG)
    b = evaluate(models["ref"], models["relu"], em.batches(x, 90), CFG)
    for oa, ob in zip(a.outputs, b.outputs, strict=True):
        assert oa.errors.max_abs_error == ob.errors.max_abs_error
        assert oa.errors.sqnr_db == pytest.approx(ob.errors.sqnr_db, rel=1e-12)
        assert oa.cosine_mean == pytest.approx(ob.cosine_mean, rel=1e-12)
        assert oa.cosine_min == ob.cosine_min
        assert oa.top1_agreement == ob.top1_agreement
    assert [s.id for s in a.sites] == [s.id for s in b.sites]


def test_rank2_float_outputs_are_classification_by_default(models: dict[str, Path]) -> None:
    rep = evaluate(
        models["ref"], models["add"], em.batches(em.data(16), 8), EvalConfig(sites=(), threads=1)
    )
    assert [o.kind for o in rep.outputs] == ["classification", "classification"]
    assert rep.sites == ()
