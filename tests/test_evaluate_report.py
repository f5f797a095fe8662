"""AccuracyReport: JSON round trip, markdown summary, JUnit XML against the CI schema."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import _eval_models as em
import pytest
from _xsd_subset import load_schema, validate

from gelu_quant.evaluate.accuracy_report import (
    MARKDOWN_MAX_SITES,
    SCHEMA,
    AccuracyReport,
    ModelInfo,
    from_json,
    text_summary,
    to_json,
    to_junit_xml,
    to_markdown,
)
from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
from gelu_quant.evaluate.gate import GateCheck, GateConfig, GateVerdict
from gelu_quant.evaluate.metrics import ErrorStats, OutputMetrics
from gelu_quant.evaluate.site_comparison import SiteMetrics

XSD = Path(__file__).parent / "fixtures" / "junit.xsd"


def hand_report(n_sites: int = 3, passed: bool = False) -> AccuracyReport:
    err = ErrorStats(
        elements=10, max_abs_error=0.5, mean_abs_error=0.1, rmse=0.2, sqnr_db=31.5, nonfinite=0
    )
    exact = ErrorStats(
        elements=10, max_abs_error=0.0, mean_abs_error=0.0, rmse=0.0, sqnr_db=math.inf, nonfinite=0
    )
    outputs = (
        OutputMetrics("logits", "classification", 5, err, 0.99, 0.9, 0.8, 0.01, 0.6, 0.4, 5),
        OutputMetrics("emb|bar", "tensor", 5, exact, 1.0, 1.0),
    )
    sites = [
        SiteMetrics(
            f"gelu{i}",
            f"h{i}",
            f"g{i}",
            "exact",
            True,
            None,
            err,
            (-4.0, 8.5),
            f"plots/gelu{i}.png",
        )
        for i in range(n_sites)
    ]
    sites.append(SiteMetrics("sub/then/gelu0", "a", "b", "tanh", False, "inside subgraph"))
    checks = (
        GateCheck("min_cosine", "logits", 0.95, 0.99, True),
        GateCheck("max_accuracy_drop", "logits", 0.5, 20.0, passed),
    )
    return AccuracyReport(
        tool_version="0.1.0",
        reference=ModelInfo("ref.onnx", "ab" * 32),
        candidate=ModelInfo("cand.onnx", "cd" * 32),
        data_description="npz data.npz (5 samples)",
        samples=5,
        batches=1,
        outputs=outputs,
        sites=tuple(sites),
        gate=GateConfig(min_cosine=0.95, max_accuracy_drop=0.5, outputs=("logits",)),
        verdict=GateVerdict(checks),
        notes=("a note",),
    )


def test_json_round_trips_and_is_stable() -> None:
    r = hand_report()
    text = to_json(r)
    assert from_json(text) == r
    assert to_json(from_json(text)) == text
    d = json.loads(text)  # strict JSON: no Infinity/NaN literals
    assert d["schema"] == SCHEMA and d["schema_version"] == 1 and d["passed"] is False
    assert d["outputs"][1]["sqnr_db"] == "inf"
    assert d["outputs"][0]["accuracy_drop"] == pytest.approx(20.0)
    assert d["sites"][-1]["sqnr_db"] is None and d["sites"][-1]["comparable"] is False
    assert d["gate"]["checks"][1]["name"] == "max_accuracy_drop[logits]"


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="not a"):
        from_json('{"schema": "other"}')
    d = json.loads(to_json(hand_report()))
    d["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        from_json(json.dumps(d))


def test_junit_validates_and_has_one_case_per_check() -> None:
    schema = load_schema(XSD)
    for passed in (True, False):
        xml = to_junit_xml(hand_report(passed=passed))
        root = ET.fromstring(xml)
        assert validate(root, schema) == []
        cases = root.findall("./testsuite/testcase")
        assert [c.get("name") for c in cases] == ["min_cosine[logits]", "max_accuracy_drop[logits]"]
        failures = root.findall("./testsuite/testcase/failure")
        assert len(failures) == (0 if passed else 1)
        assert root.get("failures") == root.find("testsuite").get("failures") == str(len(failures))
        assert root.get("tests") == "2"


def test_schema_checker_rejects_broken_junit() -> None:
    schema = load_schema(XSD)
    root = ET.fromstring(to_junit_xml(hand_report()))
    case = root.find("./testsuite/testcase")
    assert case is not None
    del case.attrib["name"]
    case.set("bogus", "1")
    suite = root.find("testsuite")
    assert suite is not None
    suite.set("tests", "two")
    ET.SubElement(suite, "testcase", {"name": "late", "classname": "x"})  # after system-out
    errs = validate(root, schema)
    assert any("required attribute 'name'" in e for e in errs)
    assert any("'bogus' is not declared" in e for e in errs)
    assert any("tests='two'" in e for e in errs)
    assert any("unexpected <testcase>" in e for e in errs)


def test_markdown_summary() -> None:
    r = hand_report(n_sites=MARKDOWN_MAX_SITES + 5)
    md = to_markdown(r, markdown_path=Path("out/summary.md"))
    assert md.startswith("## gelu-quant accuracy gate: ❌ FAILED")
    assert "| `max_accuracy_drop[logits]` | 20 | ≤ 0.5 | **FAIL** |" in md
    assert "`emb\\|bar`" in md  # pipes escaped in table cells
    assert "[plot](../plots/gelu0.png)" in md
    assert f"… {6} more sites in the JSON report." in md
    assert len(md.encode()) < 64 * 1024


def test_report_from_a_real_run_round_trips(tmp_path: Path) -> None:
    ref = em.save(em.build(), tmp_path / "ref.onnx")
    cand = em.save(em.variant(em.RELU_TEXT), tmp_path / "relu.onnx")
    cfg = EvalConfig(sites=em.SITES, threads=1, gate=GateConfig(min_sqnr=10.0))
    r = evaluate(ref, cand, em.batches(em.data(40), 16), cfg)
    assert from_json(to_json(r)) == r
    assert validate(ET.fromstring(to_junit_xml(r)), load_schema(XSD)) == []


def test_text_summary_lists_outputs_sites_checks_and_verdict() -> None:
    lines = text_summary(hand_report(n_sites=8), max_sites=2).splitlines()
    assert lines[0].startswith("output logits: cosine mean 0.990000 worst 0.900000")
    assert "acc 0.6000 -> 0.4000 (drop 20.000 pp)" in lines[0]
    assert [ln.split(":")[0] for ln in lines[2:4]] == ["site gelu0", "site gelu1"]
    assert lines[-3].startswith("ok   min_cosine on logits")
    assert lines[-2].startswith("FAIL max_accuracy_drop on logits: 20 <= 0.5")
    assert lines[-1] == "gate FAILED (5 samples)"
