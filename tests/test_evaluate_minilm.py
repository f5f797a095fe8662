"""The evaluator on all-MiniLM-L6-v2 converted to int8 GELU tables (slow).

Pipeline: the opset-17 export, per-site ranges calibrated on corpus sentences, ``int8-lut``
conversion, then ``evaluate`` / ``gelu-quant eval`` on disjoint evaluation sentences. Oracles:
the site list comes from the conversion manifest (6 sites), the output cosine from plain ORT
runs of both models here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from gelu_quant.calib.data import model_input_specs, open_data_source
from gelu_quant.cli.main import main
from gelu_quant.evaluate.accuracy_report import from_json
from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
from gelu_quant.evaluate.gate import GateConfig, judge

pytestmark = pytest.mark.slow

SEQ = 64
N_EVAL = 48


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gelu_quant.calib.calibration import calibrate_model
    from gelu_quant.calib.ranges_file import load_ranges
    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.models.corpus import stdlib_sentences
    from gelu_quant.models.minilm import minilm_onnx, minilm_tokenizer_dir, tokenize

    d = tmp_path_factory.mktemp("minilm_eval")
    src = minilm_onnx("opset17")
    np.savez(d / "calib.npz", **tokenize(stdlib_sentences("calibration", limit=32), SEQ))
    sentences = stdlib_sentences("evaluation", limit=N_EVAL)
    np.savez(d / "eval.npz", **tokenize(sentences, SEQ))
    (d / "eval.txt").write_text("".join(f"{t}\n" for t in sentences), encoding="utf-8")
    ranges = d / "ranges.json"
    calibrate_model(src, str(d / "calib.npz"), ranges, batch_size=16, threads=2)
    dst = d / "minilm.gq.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_file(src, dst, ConvertConfig("int8-lut"), ranges=load_ranges(ranges))
    return {
        "src": src,
        "dst": dst,
        "data": d / "eval.npz",
        "text": d / "eval.txt",
        "tokenizer": minilm_tokenizer_dir(),
    }


def _embeddings(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(["sentence_embedding"], feed)[0], dtype=np.float64)


def test_report_lists_all_six_sites_with_sqnr(converted: dict[str, Path]) -> None:
    names = ("input_ids", "attention_mask", "token_type_ids")
    data = open_data_source(
        str(converted["data"]), model_input_specs(converted["src"]), batch_size=16
    )
    manifest = converted["dst"].with_name("minilm.gq.manifest.json")
    cfg = EvalConfig(classification_outputs=(), threads=2, manifest=manifest)
    rep = evaluate(converted["src"], converted["dst"], data, cfg)
    man = json.loads(manifest.read_text())
    want_ids = sorted(s["id"] for s in man["sites"] if s["status"] == "converted")
    assert len(want_ids) == 6
    assert sorted(s.id for s in rep.sites) == want_ids
    sq = []
    for s in rep.sites:
        assert s.comparable and s.errors is not None, s
        assert np.isfinite(s.errors.sqnr_db) and s.errors.sqnr_db > 10.0
        assert s.input_range == tuple(man["sites"][int(s.id[4:])]["range"])
        sq.append(s.errors.sqnr_db)
    assert sq == sorted(sq)  # worst first
    # oracle for the output metric: plain ORT runs over all evaluation sentences at once
    with np.load(converted["data"]) as z:
        feed = {k: z[k] for k in names}
    a, b = _embeddings(converted["src"], feed), _embeddings(converted["dst"], feed)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    emb = rep.output("sentence_embedding")
    assert emb.kind == "tensor" and emb.samples == N_EVAL
    assert emb.cosine_mean == pytest.approx(float(cos.mean()), abs=1e-6)
    assert emb.cosine_min == pytest.approx(float(cos.min()), abs=1e-6)
    assert 0.9 < emb.cosine_min < 1.0
    # the gate follows the thresholds, here and through the CLI below
    only = ("sentence_embedding",)
    assert judge(GateConfig(min_cosine=float(cos.mean()) - 1e-5, outputs=only), rep.outputs).passed
    assert not judge(
        GateConfig(min_cosine=float(cos.mean()) + 1e-5, outputs=only), rep.outputs
    ).passed


@pytest.mark.parametrize("passes", [True, False])
def test_cli_gate_passes_or_fails_by_threshold(
    converted: dict[str, Path], tmp_path: Path, passes: bool
) -> None:
    threshold = "0.9" if passes else "0.99999"
    js = tmp_path / "report.json"
    r = CliRunner().invoke(
        main,
        [
            "eval", str(converted["src"]), str(converted["dst"]),
            "--data", str(converted["text"]), "--tokenizer", str(converted["tokenizer"]),
            "--max-length", str(SEQ), "--batch-size", "16", "--threads", "2",
            "--no-classification", "--min-cosine", threshold, "--report-json", str(js),
            "--junit", str(tmp_path / "junit.xml"), "-q",
        ],
    )  # fmt: skip
    assert r.exit_code == (0 if passes else 1), r.stderr
    rep = from_json(js.read_text())
    assert rep.samples == N_EVAL
    assert len(rep.sites) == 6 and all(s.errors is not None for s in rep.sites)
    assert [c.name for c in rep.verdict.checks] == [
        "min_cosine[last_hidden_state]",
        "min_cosine[sentence_embedding]",
    ]
    assert rep.passed is passes
