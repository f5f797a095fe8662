"""Untrusted models: external data that points outside the model's folder (``../secret.bin``, an
absolute path, a symlink inside the folder that leads out), a data file that is missing or shorter
than the tensors it declares, and a model file over protobuf's 2 GB limit.

Every command that reads a model (``inspect``, ``calibrate``, ``convert``, ``eval`` as reference
and as candidate, ``pipeline``) must refuse each of them with one line on stderr and exit code 2,
write nothing, and read nothing outside the folder. The oracle for "read nothing": the outside
file's access time, set far in the past before the command (the file system updates it on a read;
checked on a control read first, the check is skipped where it does not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from _small_models import matmul_gelu
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.cli.main import main
from gelu_quant.errors import ModelError
from gelu_quant.modelfile import PROTOBUF_LIMIT, check_external_data, read_model

W = np.random.default_rng(7).standard_normal((8, 8)).astype(np.float32)


def _graph_model() -> onnx.ModelProto:
    """x[N, 8] -> MatMul(W) -> Gelu (opset 20) -> y: one GELU, one weight to keep external."""
    return matmul_gelu(W)


def _save_external(folder: Path, location: str = "model.data") -> Path:
    """The model with W in ``folder/location`` (a good model)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        _graph_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model file at ``location`` (model bytes only)."""
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())


def _secret(tmp_path: Path) -> Path:
    """A file outside the model folder holding valid weights (a read would succeed)."""
    s = tmp_path / "secret.bin"
    s.write_bytes(W.tobytes())
    return s


def case_dotdot(tmp_path: Path) -> tuple[Path, Path | None]:
    path = _save_external(tmp_path / "m")
    secret = _secret(tmp_path)
    _relocate(path, "../secret.bin")
    return path, secret


def case_absolute(tmp_path: Path) -> tuple[Path, Path | None]:
    path = _save_external(tmp_path / "m")
    secret = _secret(tmp_path)
    _relocate(path, str(secret))
    return path, secret


def case_symlink(tmp_path: Path) -> tuple[Path, Path | None]:
    path = _save_external(tmp_path / "m")
    secret = _secret(tmp_path)
    (path.parent / "model.data").unlink()
    (path.parent / "model.data").symlink_to(secret)
    return path, secret


def case_missing(tmp_path: Path) -> tuple[Path, Path | None]:
    path = _save_external(tmp_path / "m")
    (path.parent / "model.data").unlink()
    return path, None


def case_short(tmp_path: Path) -> tuple[Path, Path | None]:
    path = _save_external(tmp_path / "m")
    data = path.parent / "model.data"
    data.write_bytes(data.read_bytes()[: W.nbytes // 2])
    return path, None


def case_over_2gb(tmp_path: Path) -> tuple[Path, Path | None]:
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    raw = _graph_model().SerializeToString()
    with path.open("wb") as f:  # a sparse file: real model bytes, then a hole past 2 GB
        f.write(raw)
        f.truncate(PROTOBUF_LIMIT + 1)
    return path, None


CASES: dict[str, Callable[[Path], tuple[Path, Path | None]]] = {
    "dotdot": case_dotdot,
    "absolute": case_absolute,
    "symlink": case_symlink,
    "missing": case_missing,
    "short": case_short,
    "over-2gb": case_over_2gb,
}

MESSAGES = {
    "dotdot": "leaves the folder",
    "absolute": "absolute path",
    "symlink": "leads outside",
    "missing": "is missing",
    "short": "shorter than",
    "over-2gb": "2 GB",
}


def _atime_works(tmp_path: Path) -> bool:
    probe = tmp_path / "atime-probe"
    probe.write_bytes(b"x")
    os.utime(probe, (0, time.time()))
    probe.read_bytes()
    return os.stat(probe).st_atime > 0


def _data_files(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.savez(d / "calib.npz", x=rng.standard_normal((16, 8)).astype(np.float32))
    np.savez(d / "eval.npz", x=rng.standard_normal((8, 8)).astype(np.float32))
    good = _save_external(tmp_path / "good")
    return {"calib": d / "calib.npz", "eval": d / "eval.npz", "good": good}


def _commands(model: Path, files: dict[str, Path], out: Path) -> dict[str, list[str]]:
    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text(
        f'model = "{model.as_posix()}"\n'
        'target = "int8-lut"\n'
        f'[calibrate]\ndata = "{files["calib"].as_posix()}"\n'
        f'[eval]\ndata = "{files["eval"].as_posix()}"\n'
        "[gate]\nmin-cosine = 0.5\n"
    )
    return {
        "inspect": ["inspect", str(model)],
        "calibrate": [
            "calibrate",
            str(model),
            "--data",
            str(files["calib"]),
            "-o",
            str(out / "ranges.json"),
        ],
        "convert": [
            "convert",
            str(model),
            "--range",
            "-4",
            "4",
            "--target",
            "int8-lut",
            "-o",
            str(out / "m.gq.onnx"),
        ],
        "eval-reference": ["eval", str(model), str(files["good"]), "--data", str(files["eval"])],
        "eval-candidate": ["eval", str(files["good"]), str(model), "--data", str(files["eval"])],
        "pipeline": ["pipeline", str(cfg), "-o", str(out / "pipeline")],
    }


COMMANDS = ["inspect", "calibrate", "convert", "eval-reference", "eval-candidate", "pipeline"]


def test_the_good_model_passes_every_command(tmp_path: Path) -> None:
    """The control: the same model with its data file in place works with every command, so the
    refusals below are about the data references, not about the model or the commands."""
    files = _data_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name, args in _commands(files["good"], files, out).items():
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, (name, r.stdout, r.stderr)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_untrusted_models(tmp_path: Path, case: str, command: str) -> None:
    files = _data_files(tmp_path)
    model, secret = CASES[case](tmp_path)
    check_atime = secret is not None and _atime_works(tmp_path)
    if secret is not None:
        os.utime(secret, (0, time.time()))
    out = tmp_path / "out"
    out.mkdir()
    args = _commands(model, files, out)[command]
    before = sorted(p.name for p in model.parent.iterdir())
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gelu-quant: error:"), r.stderr
    assert MESSAGES[case] in lines[0], lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert list(out.iterdir()) == [], "something was written"
    assert sorted(p.name for p in model.parent.iterdir()) == before, "the model folder changed"
    if check_atime:
        assert secret is not None
        assert os.stat(secret).st_atime == 0, "the file outside the folder was read"


def test_reference_loader_refuses_external_data_in_subgraphs_and_attributes(
    tmp_path: Path,
) -> None:
    """The check covers every tensor: a Constant's tensor attribute inside an If branch."""
    tmp_path.joinpath("m").mkdir()
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    t = numpy_helper.from_array(W, "c")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("length", str(W.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=t)],
        "then",
        [],
        [helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [8, 8])],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m" / "model.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="leaves the folder"):
        read_model(path)
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 2 and "leaves the folder" in r.stderr


def test_in_folder_external_data_is_accepted(tmp_path: Path) -> None:
    """Locations inside the folder (a subfolder, a symlink that stays inside) are fine."""
    (tmp_path / "m" / "weights").mkdir(parents=True)
    path = _save_external(tmp_path / "m", location="weights/w.bin")
    refs = check_external_data(onnx.load(str(path), load_external_data=False), path.parent)
    assert [r.path for r in refs] == [(path.parent / "weights" / "w.bin").resolve()]
    m = read_model(path, external_data=True)
    np.testing.assert_array_equal(numpy_helper.to_array(m.graph.initializer[0]), W)
    # a symlink that stays inside passes the check (onnx's own loader still refuses symlinks)
    (path.parent / "alias.bin").symlink_to(path.parent / "weights" / "w.bin")
    _relocate(path, "alias.bin")
    refs = check_external_data(onnx.load(str(path), load_external_data=False), path.parent)
    assert [r.path for r in refs] == [(path.parent / "weights" / "w.bin").resolve()]
