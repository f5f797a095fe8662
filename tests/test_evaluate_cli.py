"""`gelu-quant eval`: exit codes 0/1/2, reports written, the gate config file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import _eval_models as em
import numpy as np
import pytest
from _xsd_subset import load_schema, validate
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.evaluate.accuracy_report import from_json

XSD = Path(__file__).parent / "fixtures" / "junit.xsd"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval_cli")
    x = em.data(64)
    np.savez(d / "data.npz", x=x)
    return {
        "dir": d,
        "ref": em.save(em.build(), d / "ref.onnx"),
        "relu": em.save(em.variant(em.RELU_TEXT), d / "relu.onnx"),
        "add": em.save(em.variant(em.ADD_TEXT), d / "add.onnx"),
        "data": d / "data.npz",
    }


def run(*args: str | Path) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["eval", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_pass_exit_0_writes_all_reports(files: dict[str, Path], tmp_path: Path) -> None:
    js, md, ju = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "j.xml"
    code, out, err = run(
        files["ref"],
        files["relu"],
        "--data",
        files["data"],
        "--batch-size",
        "16",
        "--min-cosine",
        "0.9",
        "--min-top1-agreement",
        "0.5",
        "--threads",
        "1",
        "--report-json",
        js,
        "--report-md",
        md,
        "--junit",
        ju,
    )
    assert code == 0, err
    assert "gate passed (64 samples)" in out
    r = from_json(js.read_text())
    assert r.passed and r.samples == 64 and r.batches == 4
    assert [c.name for c in r.verdict.checks] == [
        "min_cosine[logits]",
        "min_cosine[hidden]",
        "min_top1_agreement[logits]",
        "min_top1_agreement[hidden]",
    ]
    assert "✅ passed" in md.read_text()
    assert validate(ET.parse(ju).getroot(), load_schema(XSD)) == []


def test_gate_failure_exit_1_after_writing_reports(files: dict[str, Path], tmp_path: Path) -> None:
    js, ju = tmp_path / "r.json", tmp_path / "j.xml"
    code, _out, err = run(
        files["ref"],
        files["relu"],
        "--data",
        files["data"],
        "--min-sqnr",
        "60",
        "--classification-output",
        "logits",
        "--report-json",
        js,
        "--junit",
        ju,
        "--quiet",
    )
    assert code == 1
    assert err.count("\n") == 1 and "accuracy gate failed: min_sqnr on logits" in err
    assert json.loads(js.read_text())["passed"] is False
    root = ET.parse(ju).getroot()
    assert validate(root, load_schema(XSD)) == []
    assert root.get("failures") == "2"


def test_gate_config_file_and_flag_override(files: dict[str, Path], tmp_path: Path) -> None:
    toml = tmp_path / "pyproject.toml"
    toml.write_text("[tool.gelu-quant.gate]\nmin-sqnr = 60\noutputs = ['hidden']\n")
    base = [files["ref"], files["add"], "--data", files["data"], "-q", "--gate-config", toml]
    assert run(*base)[0] == 1  # hidden is off by 0.25: SQNR well below 60 dB
    assert run(*base, "--min-sqnr", "5")[0] == 0


@pytest.mark.parametrize(
    "extra",
    [
        ["--data", "missing.npz"],
        ["--data", "DATA", "--max-accuracy-drop", "1"],  # needs labels
        ["--data", "DATA", "--min-top1-agreement", "0.9", "--classification-output", "nope"],
        ["--data", "DATA", "--min-cosine", "abc"],  # click usage error
        ["--data", "DATA", "--report-json", "DATA"],  # would overwrite an input
    ],
)
def test_bad_input_exit_2(files: dict[str, Path], extra: list[str]) -> None:
    extra = [str(files["data"]) if a == "DATA" else a for a in extra]
    code, _out, err = run(files["ref"], files["relu"], *extra, "-q")
    assert code == 2, err
    assert err.startswith("gelu-quant: error:") or "Error" in err


def test_mismatched_models_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    other = em.variant({"float[N, 8] hidden)": "float[N, 8] hid2)", "hidden = Div": "hid2 = Div"})
    cand = em.save(other, tmp_path / "other.onnx")
    code, _out, err = run(files["ref"], cand, "--data", files["data"], "-q")
    assert code == 2
    assert "outputs only in the reference: hidden" in err and "only in the candidate: hid2" in err


def test_json_on_stdout(files: dict[str, Path]) -> None:
    code, out, _err = run(
        files["ref"],
        files["add"],
        "--data",
        files["data"],
        "--json",
        "--max-batches",
        "2",
        "--batch-size",
        "8",
    )
    assert code == 0
    r = from_json(out)
    assert r.samples == 16 and r.output("hidden").errors.max_abs_error == em.ADD_C
    assert r.data_description.endswith("data.npz")
