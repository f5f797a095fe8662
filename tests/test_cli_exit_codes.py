"""Every command's exit codes: 0 success, 1 gate failed, 2 bad input, 3 internal error.

An internal error is injected by replacing the library call a command makes with one that raises
(the oracle: the command's own code is unchanged; only what it calls fails). Its message is one
line naming the error and asking for a report; the traceback appears only with ``--debug`` or
``GELU_QUANT_DEBUG=1``. A crash must never exit 1, the code that means "the gate failed".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _small_models import matmul_gelu
from click.testing import CliRunner, Result

from gelu_quant.cli.main import main

RNG = np.random.default_rng(11)
W = RNG.standard_normal((8, 8)).astype(np.float32)


def _model(path: Path, w: np.ndarray = W) -> Path:
    onnx.save_model(matmul_gelu(w), str(path))
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    np.savez(tmp_path / "calib.npz", x=RNG.standard_normal((16, 8)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=RNG.standard_normal((8, 8)).astype(np.float32))
    cfg = tmp_path / "p.toml"
    model = _model(tmp_path / "model.onnx")
    cfg.write_text(
        f'model = "{model.as_posix()}"\ntarget = "int8-lut"\n'
        f'[calibrate]\ndata = "{(tmp_path / "calib.npz").as_posix()}"\n'
        f'[eval]\ndata = "{(tmp_path / "eval.npz").as_posix()}"\n'
        "[gate]\nmin-cosine = 0.5\n"
    )
    failing = tmp_path / "fail.toml"
    failing.write_text(cfg.read_text().replace("min-cosine = 0.5", "min-cosine = 1.5"))
    return {
        "model": model,
        "other": _model(tmp_path / "other.onnx", -W),  # a different model: cosine far below 0.9
        "calib": tmp_path / "calib.npz",
        "eval": tmp_path / "eval.npz",
        "cfg": cfg,
        "failing_cfg": failing,
        "dir": tmp_path,
    }


def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def _ok_args(f: dict[str, Path]) -> dict[str, list[str]]:
    d = f["dir"]
    return {
        "inspect": ["inspect", str(f["model"])],
        "calibrate": [
            "calibrate",
            str(f["model"]),
            "--data",
            str(f["calib"]),
            "-o",
            str(d / "r.json"),
            "--save-stats",
            str(d / "s.npz"),
        ],
        "merge-stats": ["merge-stats", str(d / "s.npz"), "-o", str(d / "merged.json")],
        "approx": ["approx", "lut", "--range", "-4", "4"],
        "convert": [
            "convert",
            str(f["model"]),
            "--range",
            "-4",
            "4",
            "--target",
            "int8-lut",
            "-o",
            str(d / "gq.onnx"),
        ],
        "eval": ["eval", str(f["model"]), str(d / "gq.onnx"), "--data", str(f["eval"])],
        "pipeline": ["pipeline", str(f["cfg"]), "-o", str(d / "pipe")],
    }


# the library call each command makes, replaced by one that raises
INJECT = {
    "inspect": "gelu_quant.cli.inspect_cmd.discover",
    "calibrate": "gelu_quant.cli.calibrate_cmd.calibrate_model",
    "merge-stats": "gelu_quant.cli.calibrate_cmd.merge_stats",
    "approx": "gelu_quant.cli.approx_cmd.error_report",
    "convert": "gelu_quant.cli.convert_cmd.convert_file",
    "eval": "gelu_quant.cli.eval_cmd.evaluate",
    "pipeline": "gelu_quant.pipeline.run_pipeline",
    "demo": "gelu_quant.demo.run_demo",
}


def _boom(*_a: object, **_k: object) -> None:
    raise RuntimeError("injected failure")


def test_exit_0_for_every_command(files: dict[str, Path]) -> None:
    for name, args in _ok_args(files).items():  # in order: merge-stats needs calibrate's stats
        r = _run(args)
        assert r.exit_code == 0, (name, r.stdout, r.stderr)


def test_exit_1_when_the_gate_fails(files: dict[str, Path]) -> None:
    r = _run(
        [
            "eval",
            str(files["model"]),
            str(files["other"]),
            "--data",
            str(files["eval"]),
            "--min-cosine",
            "0.9",
        ]
    )
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert "gate failed" in r.stderr or "gate failed" in r.stdout
    r = _run(["pipeline", str(files["failing_cfg"]), "-o", str(files["dir"] / "p2")])
    assert r.exit_code == 1, (r.stdout, r.stderr)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("inspect", ["inspect", "missing.onnx"]),
        ("calibrate", ["calibrate", "missing.onnx", "--data", "x.npz", "-o", "r.json"]),
        ("merge-stats", ["merge-stats", "missing.npz", "-o", "r.json"]),
        ("approx", ["approx", "lut", "--range", "4", "-4"]),
        ("convert", ["convert", "missing.onnx", "--target", "int8-lut", "-o", "o.onnx"]),
        ("convert-usage", ["convert", "m.onnx", "--target", "no-such-target", "-o", "o.onnx"]),
        ("eval", ["eval", "missing.onnx", "missing2.onnx", "--data", "x.npz"]),
        ("pipeline", ["pipeline", "missing.toml"]),
        ("demo", ["demo", "--calibration-samples", "0"]),
        ("unknown-command", ["no-such-command"]),
    ],
)
def test_exit_2_for_bad_input(name: str, args: list[str], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, (name, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gelu-quant: error:"), r.stderr


@pytest.mark.parametrize("command", list(INJECT))
def test_exit_3_for_an_internal_error(
    command: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _ok_args(files).get(command, ["demo", "-o", str(files["dir"] / "demo"), "-q"])
    if command == "merge-stats":
        assert _run(_ok_args(files)["calibrate"]).exit_code == 0
    if command == "eval":
        assert _run(_ok_args(files)["convert"]).exit_code == 0
    monkeypatch.setattr(INJECT[command], _boom)
    r = _run(args)
    assert r.exit_code == 3, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gelu-quant: internal error: RuntimeError: injected failure")
    assert "report" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in r.stderr
    # the traceback on request: the group's --debug flag, or the environment variable
    r = _run(["--debug", *args])
    assert r.exit_code == 3 and "Traceback" in r.stderr and "_boom" in r.stderr
    r = _run(args, env={"GELU_QUANT_DEBUG": "1"})
    assert r.exit_code == 3 and "Traceback" in r.stderr


def test_a_missing_file_of_our_own_is_internal_not_bad_input(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FileNotFoundError reaching the top is a bug (inputs are checked with their own
    messages); a permission error on a file the user named is bad input."""

    def gone(*_a: object, **_k: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/tmp/.gq-internal-tmp")

    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", "out/model.gq.onnx")

    args = _ok_args(files)["convert"]
    monkeypatch.setattr(INJECT["convert"], gone)
    assert _run(args).exit_code == 3
    monkeypatch.setattr(INJECT["convert"], denied)
    r = _run(args)
    assert r.exit_code == 2 and "Permission denied" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_installed_command_exits_with_the_code(tmp_path: Path) -> None:
    """The console script (a real process, not the test runner) carries the code out."""
    cmd = [sys.executable, "-c", "from gelu_quant.cli.main import main; main()"]
    p = subprocess.run([*cmd, "inspect", str(tmp_path / "none.onnx")], capture_output=True)
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07\x12\x00not a model" * 3)
    p = subprocess.run(
        [
            *cmd,
            "convert",
            str(bad),
            "--range",
            "-1",
            "1",
            "--target",
            "int8-lut",
            "-o",
            str(tmp_path / "o.onnx"),
        ],
        capture_output=True,
    )
    assert p.returncode == 2, p.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_demo_exits_1_when_its_gate_fails(tmp_path: Path) -> None:
    r = _run(
        [
            "demo",
            "-o",
            str(tmp_path / "d"),
            "-q",
            "--calibration-samples",
            "16",
            "--evaluation-samples",
            "8",
            "--min-cosine",
            "0.99999",
        ]
    )
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert "gate failed" in r.stderr
