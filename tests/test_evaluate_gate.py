"""Gate thresholds: TOML config, merging with flags, verdicts, inapplicable thresholds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gelu_quant.errors import BadInputError
from gelu_quant.evaluate.gate import (
    GateConfig,
    check_applicable,
    gate_config_from_table,
    judge,
    load_gate_config,
)
from gelu_quant.evaluate.metrics import ErrorStats, OutputMetrics


def out(name: str, kind: str = "tensor", cos: float = 0.999, sqnr: float = 30.0) -> OutputMetrics:
    e = ErrorStats(
        elements=4, max_abs_error=0.1, mean_abs_error=0.05, rmse=0.06, sqnr_db=sqnr, nonfinite=0
    )
    if kind == "classification":
        return OutputMetrics(
            name, "classification", 2, e, cos, cos - 0.01, 0.98, 0.001, 0.9, 0.895, 2
        )
    return OutputMetrics(name, "tensor", 2, e, cos, cos - 0.01)


def test_toml_table_with_dashes_and_underscores(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_text(
        '[project]\nname = "x"\n\n[tool.gelu-quant.gate]\nmax-accuracy-drop = 0.5\n'
        'min_cosine = 0.999\nmin-sqnr = 20\noutputs = ["logits"]\n'
    )
    g = load_gate_config(p)
    assert g == GateConfig(
        max_accuracy_drop=0.5, min_cosine=0.999, min_sqnr=20.0, outputs=("logits",)
    )
    merged = g.merged(GateConfig(min_cosine=0.99, min_top1_agreement=0.95))
    assert merged.min_cosine == 0.99 and merged.max_accuracy_drop == 0.5
    assert merged.min_top1_agreement == 0.95 and merged.outputs == ("logits",)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[tool.gelu-quant.gate]\nmin-cosin = 0.9\n", "unknown key 'min-cosin'"),
        ("[tool.gelu-quant.gate]\nmin-cosine = 'high'\n", "finite number"),
        ("[tool.gelu-quant.gate]\nmin-cosine = true\n", "finite number"),
        ("[tool.gelu-quant.gate]\noutputs = 'logits'\n", "list of output names"),
        ("[tool.other]\nx = 1\n", "no \\[tool.gelu-quant.gate\\] table"),
        ("[tool.gelu-quant.gate\n", "cannot read gate config"),
    ],
)
def test_bad_toml_is_bad_input(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "gate.toml"
    p.write_text(text)
    with pytest.raises(BadInputError, match=match):
        load_gate_config(p)


def test_missing_toml_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_gate_config(tmp_path / "nope.toml")


def test_judge_applies_each_threshold_to_each_output() -> None:
    outs = [out("logits", "classification", cos=0.9995), out("emb", cos=0.99, sqnr=12.0)]
    v = judge(GateConfig(min_cosine=0.999, min_sqnr=20.0, max_accuracy_drop=1.0), outs)
    got = {c.name: (c.value, c.passed) for c in v.checks}
    assert got == {
        "max_accuracy_drop[logits]": (pytest.approx(0.5), True),
        "min_cosine[logits]": (0.9995, True),
        "min_cosine[emb]": (0.99, False),
        "min_sqnr[logits]": (30.0, True),
        "min_sqnr[emb]": (12.0, False),
    }
    assert not v.passed and [c.name for c in v.failed] == ["min_cosine[emb]", "min_sqnr[emb]"]
    only = judge(GateConfig(min_cosine=0.999, outputs=("logits",)), outs)
    assert only.passed and len(only.checks) == 1


def test_boundaries_and_nan() -> None:
    assert judge(GateConfig(min_cosine=0.999), [out("a", cos=0.999)]).passed
    assert not judge(GateConfig(min_sqnr=1.0), [out("a", sqnr=math.nan)]).passed
    assert judge(GateConfig(min_sqnr=1e9), [out("a", sqnr=math.inf)]).passed


def test_inapplicable_thresholds_are_bad_input() -> None:
    kinds = {"emb": "tensor"}
    with pytest.raises(BadInputError, match="--min-top1-agreement"):
        check_applicable(GateConfig(min_top1_agreement=0.9), kinds, has_labels=False)
    with pytest.raises(BadInputError, match="needs --labels"):
        check_applicable(GateConfig(max_accuracy_drop=1), {"l": "classification"}, False)
    with pytest.raises(BadInputError, match="do not have: nope"):
        check_applicable(GateConfig(min_cosine=0.9, outputs=("nope",)), kinds, False)
    check_applicable(GateConfig(max_accuracy_drop=1), {"l": "classification"}, True, "l")
    with pytest.raises(BadInputError):
        GateConfig(min_sqnr=math.inf)


def test_gate_config_from_table_names_the_table() -> None:
    g = gate_config_from_table({"min-cosine": 0.99, "outputs": ["a"]}, "pipeline.toml [gate]")
    assert g == GateConfig(min_cosine=0.99, outputs=("a",))
    with pytest.raises(BadInputError, match=r"pipeline.toml \[gate\]: gate threshold min_sqnr"):
        gate_config_from_table({"min_sqnr": "x"}, "pipeline.toml [gate]")
