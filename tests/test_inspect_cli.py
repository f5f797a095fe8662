"""``gelu-quant inspect``: table, JSON document, --explain, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnx.parser
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.graph.discover import find_gelu_sites

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"


def save_fixture(name: str, folder: Path) -> Path:
    model = onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text())
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


def test_table_lists_site_with_qdq_context(tmp_path: Path) -> None:
    path = save_fixture("qdq_erf_ort", tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: 1 GELU site(s)"
    assert lines[1].split() == [
        "id",
        "form",
        "spelling",
        "dtype",
        "shape",
        "qdq",
        "in",
        "qdq",
        "out",
        "graph",
    ]
    assert lines[2].split() == [
        "gelu0",
        "exact",
        "pattern:erf",
        "float32",
        "[N,16]",
        "int8",
        "s=0.03125",
        "zp=0",
        "int8",
        "s=0.0166",
        "zp=-118",
        "main",
    ]


def test_json_document_holds_every_site_and_near_miss(tmp_path: Path) -> None:
    path = save_fixture("if_subgraph", tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["model"] == str(path)
    assert doc["sites"] == [s.to_json() for s in find_gelu_sites(path)]
    assert [s["id"] for s in doc["sites"]] == [
        "branch/then_branch/gelu0",
        "branch/else_branch/gelu0",
    ]
    assert doc["near_misses"] == []


def test_explain_says_why_a_pattern_was_refused(tmp_path: Path) -> None:
    path = save_fixture("miss_erf_wrong_constant", tmp_path)
    plain = CliRunner().invoke(main, ["inspect", str(path)])
    assert plain.exit_code == 0
    assert "0 GELU site(s)" in plain.output
    assert "1 near miss(es); --explain" in plain.output
    explained = CliRunner().invoke(main, ["inspect", str(path), "--explain"])
    assert explained.exit_code == 0
    assert "pattern:erf at erf: Erf argument is 0.666667·x" in explained.output
    doc = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)
    assert [m["node"] for m in doc["near_misses"]] == ["erf"]


def test_no_subgraphs_option(tmp_path: Path) -> None:
    path = save_fixture("if_subgraph", tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(path), "--no-subgraphs", "--json"])
    assert json.loads(result.output)["sites"] == []


def test_bad_inputs_are_one_line_errors_with_exit_code_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2
    assert "no such model file" in missing.output
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n")
    result = CliRunner().invoke(main, ["inspect", str(junk)])
    assert result.exit_code == 2
    assert "is not" in result.output and "ONNX model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_onnx_text_files_are_read_directly_and_bad_text_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(main, ["inspect", str(FIXTURES / "onnx_gelu.onnxtxt")])
    assert result.exit_code == 0
    assert "Warning" not in result.output
    assert result.output.splitlines()[2].split()[:3] == ["gelu0", "exact", "onnx:Gelu"]
    bad = tmp_path / "bad.onnxtxt"
    bad.write_text("not < valid\nat all\n")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "is not a readable ONNX model" in result.output
