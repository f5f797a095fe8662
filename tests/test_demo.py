"""`gelu-quant demo` end to end on the real MiniLM (small sample counts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.models.minilm import tokenize


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = CliRunner().invoke(
        main,
        ["demo", "-o", str(out), "--calibration-samples", "48", "--evaluation-samples", "32"],
    )
    assert r.exit_code == 0, r.output
    assert "gate passed" in r.output and "sentence_embedding" in r.output
    manifest = json.loads((out / "model.gq.manifest.json").read_text())
    assert manifest["converted"] == 6
    report = json.loads((out / "report.json").read_text())
    assert len(report["sites"]) == 6
    # independent check: the converted model's sentence embeddings against fp32 on fresh text
    cfg = json.loads((out / "pipeline.json").read_text())["config"]
    feeds = tokenize(["The quick brown fox jumps over the lazy dog.", "Return the sum of a list."])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(cfg["model"], so, providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(out / "model.gq.onnx"), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in ref.get_inputs()]
    a = ref.run(["sentence_embedding"], {k: feeds[k] for k in names})[0]
    b = cand.run(["sentence_embedding"], {k: feeds[k] for k in names})[0]
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos > 0.98), cos
