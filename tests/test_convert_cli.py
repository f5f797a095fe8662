"""``gelu-quant convert``: files written, JSON output, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.graph.ops import DOMAIN
from gelu_quant.numerics import gelu

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"


def _model(tmp_path: Path, name: str = "erf_torchscript") -> Path:
    src = tmp_path / f"{name}.onnx"
    onnx.save_model(onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text()), str(src))
    return src


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_convert_writes_model_and_manifest(tmp_path: Path) -> None:
    src = _model(tmp_path, "onnx_gelu")
    out = tmp_path / "o.onnx"
    code, stdout, _ = _run(
        "convert", str(src), "--range", "-6", "6", "--target", "int8-lut", "-o", str(out)
    )
    assert code == 0, stdout
    assert "1 converted" in stdout and "GeluLut_" in stdout
    m = onnx.load(str(out))
    assert sum(n.domain == DOMAIN for n in m.graph.node) == 1
    man = json.loads((tmp_path / "o.manifest.json").read_text())
    assert man["sites"][0]["range"] == [-6.0, 6.0]
    # the converted model is a GELU to int8 precision (oracle: float64 GELU)
    x = np.linspace(-6, 6, 97, dtype=np.float32)
    inp = m.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    xs = np.resize(x, int(np.prod(shape))).reshape(shape).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    y = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(
        None, {inp.name: xs}
    )[0]
    assert np.max(np.abs(y - gelu(xs.astype(np.float64)))) < 0.05


def test_convert_json_and_options(tmp_path: Path) -> None:
    src = _model(tmp_path)
    out = tmp_path / "p.onnx"
    man_path = tmp_path / "custom.json"
    code, stdout, _ = _run(
        "convert",
        str(src),
        "--range",
        "-5",
        "5",
        "--target",
        "fp16-poly",
        "-o",
        str(out),
        "--expand",
        "--manifest",
        str(man_path),
        "--segments",
        "4",
        "--degree",
        "2",
        "--json",
    )
    assert code == 0
    d = json.loads(stdout)
    assert d == json.loads(man_path.read_text())
    assert d["output"]["expanded"] is True and d["sites"][0]["body"] == "poly"
    spec = d["sites"][0]["spec"]
    assert spec["segments"] == 4 and spec["degree"] == 2
    assert not onnx.load(str(out)).functions


def test_convert_errors_are_one_line(tmp_path: Path) -> None:
    src = _model(tmp_path)
    out = tmp_path / "o.onnx"
    cases = [
        ("convert", str(src), "--target", "int8-lut", "-o", str(out)),  # no range
        ("convert", str(src), "--range", "-1", "1", "--target", "int8-lut", "-o", str(src)),
        (
            "convert",
            str(tmp_path / "missing.onnx"),
            "--range",
            "-1",
            "1",
            "--target",
            "int8-lut",
            "-o",
            str(out),
        ),
        ("convert", str(src), "--range", "3", "1", "--target", "int8-lut", "-o", str(out)),
        (
            "convert",
            str(src),
            "--ranges",
            str(tmp_path / "nope.json"),
            "--target",
            "int8-lut",
            "-o",
            str(out),
        ),
    ]
    for args in cases:
        code, _, stderr = _run(*args)
        assert code == 2, (args, stderr)
        assert stderr.count("\n") == 1 and stderr.startswith("gelu-quant: error:"), stderr
    assert not out.exists()
    # an existing output needs --overwrite
    out.write_bytes(b"x")
    code, _, stderr = _run(
        "convert", str(src), "--range", "-1", "1", "--target", "int8-lut", "-o", str(out)
    )
    assert code == 2 and "--overwrite" in stderr
    code, _, _ = _run(
        "convert",
        str(src),
        "--range",
        "-1",
        "1",
        "--target",
        "int8-lut",
        "-o",
        str(out),
        "--overwrite",
        "--quiet",
    )
    assert code == 0 and onnx.load(str(out)).graph.node
