"""The one-command pipeline on the digits ViT (real data, tanh GELU), through the CLI.

The oracle for accuracy is the labels of the held-out split, scored here with numpy on ORT outputs
of both models, independently of the evaluator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.errors import BadInputError
from gelu_quant.models.digits_vit import digits_test_data, digits_train_data, digits_vit_path
from gelu_quant.pipeline import PipelineConfig


def _accuracy(model: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    logits = s.run(None, {"pixels": pixels})[0]
    return float(np.mean(np.argmax(logits, axis=1) == labels))


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    d = tmp_path_factory.mktemp("vit")
    feeds, labels = digits_test_data()
    np.savez(d / "calib.npz", pixels=digits_train_data()[0])
    np.savez(d / "test.npz", pixels=feeds["pixels"])
    np.save(d / "labels.npy", labels)
    cfg = d / "pipeline.toml"
    cfg.write_text(
        f'model = "{digits_vit_path().as_posix()}"\n'
        'output = "out"\n'
        'target = "int8-lut"\n'
        '[calibrate]\ndata = "calib.npz"\nbatch-size = 128\n'
        '[eval]\ndata = "test.npz"\nlabels = "labels.npy"\nbatch-size = 128\n'
        "[gate]\nmax-accuracy-drop = 0.5\n"
    )
    r = CliRunner().invoke(main, ["pipeline", str(cfg), "--quiet"])
    return d, cfg, r


def test_vit_int8_gelu_accuracy_drop_within_half_a_point(vit_run: tuple) -> None:
    d, _, r = vit_run
    assert r.exit_code == 0, r.output
    feeds, labels = digits_test_data()
    fp32 = _accuracy(digits_vit_path(), feeds["pixels"], labels)
    int8 = _accuracy(d / "out" / "model.gq.onnx", feeds["pixels"], labels)
    assert fp32 > 0.95
    assert (fp32 - int8) * 100 <= 0.5, (fp32, int8)
    report = json.loads((d / "out" / "report.json").read_text())
    (logits,) = [o for o in report["outputs"] if o["name"] == "logits"]
    assert logits["accuracy_reference"] == pytest.approx(fp32)
    assert logits["accuracy_candidate"] == pytest.approx(int8)


def test_vit_pipeline_writes_every_artifact(vit_run: tuple) -> None:
    d, _, _ = vit_run
    out = d / "out"
    for name in [
        "ranges.json",
        "stats.npz",
        "model.gq.onnx",
        "model.gq.manifest.json",
        "report.json",
        "report.md",
        "junit.xml",
        "pipeline.json",
    ]:
        assert (out / name).is_file(), name
    manifest = json.loads((out / "model.gq.manifest.json").read_text())
    assert manifest["converted"] == 2 and manifest["skipped"] == 0
    # the tanh-GELU model gets tables of the tanh form
    assert {s["spec"]["form"] for s in manifest["sites"]} == {"tanh"}
    headers = sorted(p.name for p in (out / "export").glob("*.h"))
    assert headers == ["gelu0.h", "gelu1.h"]
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["passed"] is True


def test_gate_failure_exits_1_and_still_writes_reports(vit_run: tuple, tmp_path: Path) -> None:
    d, cfg, _ = vit_run
    text = cfg.read_text().replace("max-accuracy-drop = 0.5", "min-sqnr = 200.0")
    bad = d / "strict.toml"
    bad.write_text(text.replace('output = "out"', 'output = "strict"'))
    r = CliRunner().invoke(main, ["pipeline", str(bad), "--quiet"])
    assert r.exit_code == 1, r.output
    assert "gate failed" in r.output
    junit = (d / "strict" / "junit.xml").read_text()
    assert 'failures="1"' in junit


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('output = "x"\n[calibrate]\ndata = "a.npz"\n[eval]\ndata = "b.npz"\n', "'model'"),
        ('model = "m.onnx"\n[eval]\ndata = "b.npz"\n', "[calibrate]"),
        ('model = "m.onnx"\ncolour = 1\n[calibrate]\ndata="a"\n[eval]\ndata="b"\n', "colour"),
        (
            'model = "m.onnx"\n[calibrate]\ndata="a"\nmax-batches = 0\n[eval]\ndata="b"\n',
            "max-batches",
        ),
        ('model = "m.onnx"\n[calibrate]\ndata="a"\nmethod="best"\n[eval]\ndata="b"\n', "method"),
        (
            'model = "m.onnx"\n[calibrate]\ndata="a"\n[eval]\ndata="b"\n[gate]\nmin-cos = 1\n',
            "min-cos",
        ),
        ("model = [", "cannot read"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(body)
    with pytest.raises(BadInputError, match=message.replace("[", r"\[")):
        PipelineConfig.from_toml(cfg)
    r = CliRunner().invoke(main, ["pipeline", str(cfg)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1


def test_missing_model_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('model = "nope.onnx"\n[calibrate]\ndata="a.npz"\n[eval]\ndata="b.npz"\n')
    r = CliRunner().invoke(main, ["pipeline", str(cfg)])
    assert r.exit_code == 2 and "does not exist" in r.output
