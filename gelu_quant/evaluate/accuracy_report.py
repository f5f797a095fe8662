"""The accuracy report: :class:`AccuracyReport`, its JSON form, a markdown summary and JUnit XML.

JSON schema ``gelu-quant.accuracy-report``, version 1 (stable: fields are only ever added, and a
change of meaning bumps ``schema_version``)::

    {
      "schema": "gelu-quant.accuracy-report",
      "schema_version": 1,
      "tool_version": "0.1.0",
      "passed": true,                       # the gate verdict
      "reference": {"path": "...", "sha256": "..."},   # sha256 of the .onnx file itself
      "candidate": {"path": "...", "sha256": "..."},
      "data": {"description": "...", "samples": 2048, "batches": 64},
      "outputs": [{                         # model outputs, in the reference's order
        "name": "logits", "kind": "tensor" | "classification", "samples": 2048,
        "elements": ..., "nonfinite": 0,
        "max_abs_error": ..., "mean_abs_error": ..., "rmse": ..., "sqnr_db": ...,
        "cosine_mean": ..., "cosine_min": ...,
        "top1_agreement": ... | null, "kl_divergence": ... | null,       # classification
        "accuracy_reference": ... | null, "accuracy_candidate": ... | null,  # with labels
        "accuracy_drop": ... | null,        # percentage points, derived (ignored on read)
        "labels": ... | null
      }],
      "sites": [{                           # GELU sites, worst (lowest SQNR) first
        "id": "gelu0", "input": "...", "output": "...", "form": "exact",
        "comparable": true, "reason": null,
        "elements": ..., "nonfinite": 0,
        "max_abs_error": ..., "mean_abs_error": ..., "rmse": ..., "sqnr_db": ...,
        "input_range": [lo, hi] | null, "plot": "plots/gelu0.png" | null,
        "compared": "g0" | "q0 (dequantized)" | null   # the tensor compared
      }],
      "gate": {
        "config": {"max_accuracy_drop": null, "min_cosine": 0.999, ..., "outputs": null},
        "checks": [{"name": "min_cosine[logits]", "threshold": "min_cosine",
                    "output": "logits", "limit": 0.999, "value": 0.9995, "passed": true}]
      },
      "notes": ["..."]
    }

Metric definitions are in :mod:`gelu_quant.evaluate.metrics`. Non-finite floats are written as
the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has no such numbers); error-metric fields
of a site that is not comparable are null.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gelu_quant.evaluate.gate import GateCheck, GateConfig, GateVerdict
from gelu_quant.evaluate.metrics import ErrorStats, OutputMetrics
from gelu_quant.evaluate.site_comparison import SiteMetrics
from gelu_quant.graph.sites import GeluSite

SCHEMA = "gelu-quant.accuracy-report"
SCHEMA_VERSION = 1
MARKDOWN_MAX_SITES = 50
"""Rows of the site table in the markdown summary (the JSON report has all sites)."""


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str


@dataclass(frozen=True)
class AccuracyReport:
    """Everything the evaluator measured and the gate's verdict."""

    tool_version: str
    reference: ModelInfo
    candidate: ModelInfo
    data_description: str
    samples: int
    batches: int
    outputs: tuple[OutputMetrics, ...]
    sites: tuple[SiteMetrics, ...]
    """Ranked worst first."""
    gate: GateConfig
    verdict: GateVerdict
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def output(self, name: str) -> OutputMetrics:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def site(self, site_id: str) -> SiteMetrics:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)


# -- JSON -------------------------------------------------------------------------------------
def _f(x: float | None) -> float | str | None:
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _uf(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, str):
        if x not in ("nan", "inf", "-inf"):
            raise ValueError(f"not a number: {x!r}")
        return float(x)
    return float(x)


def _uf_req(x: Any) -> float:
    v = _uf(x)
    if v is None:
        raise ValueError("a required number is null")
    return v


def _errors_json(e: ErrorStats | None) -> dict[str, Any]:
    keys = ("elements", "nonfinite", "max_abs_error", "mean_abs_error", "rmse", "sqnr_db")
    if e is None:
        return dict.fromkeys(keys)
    return {
        "elements": e.elements,
        "nonfinite": e.nonfinite,
        "max_abs_error": _f(e.max_abs_error),
        "mean_abs_error": _f(e.mean_abs_error),
        "rmse": _f(e.rmse),
        "sqnr_db": _f(e.sqnr_db),
    }


def _errors_from(d: Mapping[str, Any]) -> ErrorStats | None:
    if d.get("elements") is None:
        return None
    return ErrorStats(
        elements=int(d["elements"]),
        max_abs_error=_uf_req(d["max_abs_error"]),
        mean_abs_error=_uf_req(d["mean_abs_error"]),
        rmse=_uf_req(d["rmse"]),
        sqnr_db=_uf_req(d["sqnr_db"]),
        nonfinite=int(d["nonfinite"]),
    )


def _output_json(o: OutputMetrics) -> dict[str, Any]:
    return {
        "name": o.name,
        "kind": o.kind,
        "samples": o.samples,
        **_errors_json(o.errors),
        "cosine_mean": _f(o.cosine_mean),
        "cosine_min": _f(o.cosine_min),
        "top1_agreement": _f(o.top1_agreement),
        "kl_divergence": _f(o.kl_divergence),
        "accuracy_reference": _f(o.accuracy_reference),
        "accuracy_candidate": _f(o.accuracy_candidate),
        "accuracy_drop": _f(o.accuracy_drop),
        "labels": o.labels,
    }


def _output_from(d: Mapping[str, Any]) -> OutputMetrics:
    errors = _errors_from(d)
    if errors is None:
        raise ValueError(f"output {d.get('name')!r} has no error metrics")
    return OutputMetrics(
        name=str(d["name"]),
        kind=d["kind"],
        samples=int(d["samples"]),
        errors=errors,
        cosine_mean=_uf_req(d["cosine_mean"]),
        cosine_min=_uf_req(d["cosine_min"]),
        top1_agreement=_uf(d.get("top1_agreement")),
        kl_divergence=_uf(d.get("kl_divergence")),
        accuracy_reference=_uf(d.get("accuracy_reference")),
        accuracy_candidate=_uf(d.get("accuracy_candidate")),
        labels=None if d.get("labels") is None else int(d["labels"]),
    )


def _site_json(s: SiteMetrics) -> dict[str, Any]:
    return {
        "id": s.id,
        "input": s.input,
        "output": s.output,
        "form": s.form,
        "comparable": s.comparable,
        "reason": s.reason,
        **_errors_json(s.errors),
        "input_range": None if s.input_range is None else [_f(v) for v in s.input_range],
        "plot": s.plot,
        "compared": s.compared,
    }


def _site_from(d: Mapping[str, Any]) -> SiteMetrics:
    rng = d.get("input_range")
    return SiteMetrics(
        id=str(d["id"]),
        input=str(d["input"]),
        output=str(d["output"]),
        form=GeluSite.form_in_json(d),
        comparable=bool(d["comparable"]),
        reason=d.get("reason"),
        errors=_errors_from(d),
        input_range=None if rng is None else (_uf_req(rng[0]), _uf_req(rng[1])),
        plot=d.get("plot"),
        compared=d.get("compared"),
    )


def _check_json(c: GateCheck) -> dict[str, Any]:
    return {
        "name": c.name,
        "threshold": c.threshold,
        "output": c.output,
        "limit": _f(c.limit),
        "value": _f(c.value),
        "passed": c.passed,
    }


def report_to_dict(r: AccuracyReport) -> dict[str, Any]:
    """The report as JSON-ready data (schema above)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tool_version": r.tool_version,
        "passed": r.passed,
        "reference": {"path": r.reference.path, "sha256": r.reference.sha256},
        "candidate": {"path": r.candidate.path, "sha256": r.candidate.sha256},
        "data": {"description": r.data_description, "samples": r.samples, "batches": r.batches},
        "outputs": [_output_json(o) for o in r.outputs],
        "sites": [_site_json(s) for s in r.sites],
        "gate": {
            "config": r.gate.to_json(),
            "checks": [_check_json(c) for c in r.verdict.checks],
        },
        "notes": list(r.notes),
    }


def to_json(r: AccuracyReport) -> str:
    """Deterministic JSON text of the report (2-space indent, trailing newline)."""
    return json.dumps(report_to_dict(r), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def from_json(text: str) -> AccuracyReport:
    """Parse a report written by :func:`to_json`; ValueError when it is not one."""
    d = json.loads(text)
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"unsupported schema_version {d.get('schema_version')!r}; this reads {SCHEMA_VERSION}"
        )
    try:
        checks = tuple(
            GateCheck(
                threshold=c["threshold"],
                output=str(c["output"]),
                limit=_uf_req(c["limit"]),
                value=_uf_req(c["value"]),
                passed=bool(c["passed"]),
            )
            for c in d["gate"]["checks"]
        )
        return AccuracyReport(
            tool_version=str(d["tool_version"]),
            reference=ModelInfo(**d["reference"]),
            candidate=ModelInfo(**d["candidate"]),
            data_description=str(d["data"]["description"]),
            samples=int(d["data"]["samples"]),
            batches=int(d["data"]["batches"]),
            outputs=tuple(_output_from(o) for o in d["outputs"]),
            sites=tuple(_site_from(s) for s in d["sites"]),
            gate=GateConfig.from_json(d["gate"]["config"]),
            verdict=GateVerdict(checks),
            notes=tuple(str(n) for n in d.get("notes", [])),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed {SCHEMA} document: {e!r}") from None


# -- markdown ---------------------------------------------------------------------------------
def _m(x: float | None, fmt: str = ".6g") -> str:
    if x is None:
        return "–"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return format(x, fmt)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def text_summary(r: AccuracyReport, *, max_sites: int = 6) -> str:
    """Plain-text summary for a terminal: outputs, the worst sites, each check, the verdict."""
    lines = []
    for o in r.outputs:
        extra = ""
        if o.top1_agreement is not None:
            extra += f"  top1 {o.top1_agreement:.4f}  KL {o.kl_divergence:.3g}"
        if o.accuracy_drop is not None:
            extra += (
                f"  acc {o.accuracy_reference:.4f} -> {o.accuracy_candidate:.4f}"
                f" (drop {o.accuracy_drop:.3f} pp)"
            )
        lines.append(
            f"output {o.name}: cosine mean {o.cosine_mean:.6f} worst {o.cosine_min:.6f}  "
            f"SQNR {o.errors.sqnr_db:.2f} dB  max|err| {o.errors.max_abs_error:.4g}{extra}"
        )
    for s in r.sites[:max_sites]:
        if s.errors is not None:
            lines.append(
                f"site {s.id}: SQNR {s.errors.sqnr_db:.2f} dB  max|err| "
                f"{s.errors.max_abs_error:.4g}"
            )
    for c in r.verdict.checks:
        lines.append(("ok   " if c.passed else "FAIL ") + c.message)
    lines.append(f"gate {'passed' if r.passed else 'FAILED'} ({r.samples} samples)")
    return "\n".join(lines)


def to_markdown(r: AccuracyReport, *, markdown_path: Path | None = None) -> str:
    """A summary for a CI step summary: verdict, checks, outputs, the worst sites.

    Plot links are made relative to ``markdown_path``'s folder when given.
    """
    status = "✅ passed" if r.passed else "❌ FAILED"
    lines = [
        f"## gelu-quant accuracy gate: {status}",
        "",
        f"Candidate `{_cell(r.candidate.path)}` against reference `{_cell(r.reference.path)}` "
        f"on {_cell(r.data_description)} ({r.samples} samples, {r.batches} batches).",
        "",
    ]
    if r.verdict.checks:
        lines += ["| check | value | threshold | result |", "|---|---:|---:|---|"]
        for c in r.verdict.checks:
            op = "≤" if c.threshold.startswith("max_") else "≥"
            res = "pass" if c.passed else "**FAIL**"
            lines.append(f"| `{_cell(c.name)}` | {_m(c.value)} | {op} {_m(c.limit)} | {res} |")
    else:
        lines.append("No thresholds were given: the gate passes by default.")
    lines += [
        "",
        "### Outputs",
        "",
        "| output | kind | cosine mean | cosine worst | SQNR dB | max abs err | mean abs err "
        "| RMSE | top-1 agree | KL | acc ref | acc cand | drop (pp) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in r.outputs:
        e = o.errors
        lines.append(
            f"| `{_cell(o.name)}` | {o.kind} | {_m(o.cosine_mean)} | {_m(o.cosine_min)} "
            f"| {_m(e.sqnr_db, '.2f')} | {_m(e.max_abs_error, '.4g')} "
            f"| {_m(e.mean_abs_error, '.4g')} | {_m(e.rmse, '.4g')} | {_m(o.top1_agreement)} "
            f"| {_m(o.kl_divergence, '.4g')} | {_m(o.accuracy_reference)} "
            f"| {_m(o.accuracy_candidate)} | {_m(o.accuracy_drop, '.3f')} |"
        )
    if r.sites:
        base = markdown_path.parent if markdown_path is not None else None
        lines += [
            "",
            "### GELU sites, worst first",
            "",
            "| # | site | SQNR dB | max abs err | RMSE | input range | plot |",
            "|---:|---|---:|---:|---:|---|---|",
        ]
        for i, s in enumerate(r.sites[:MARKDOWN_MAX_SITES], 1):
            if s.errors is None:
                lines.append(
                    f"| {i} | `{_cell(s.id)}` | not comparable: {_cell(s.reason or '')} | | | | |"
                )
                continue
            rng = (
                "–"
                if s.input_range is None
                else f"[{s.input_range[0]:.4g}, {s.input_range[1]:.4g}]"
            )
            plot = "–"
            if s.plot is not None:
                target = s.plot
                if base is not None:
                    target = os.path.relpath(Path(s.plot).resolve(), base.resolve())
                plot = f"[plot]({Path(target).as_posix()})"
            lines.append(
                f"| {i} | `{_cell(s.id)}` | {_m(s.errors.sqnr_db, '.2f')} "
                f"| {_m(s.errors.max_abs_error, '.4g')} | {_m(s.errors.rmse, '.4g')} "
                f"| {rng} | {plot} |"
            )
        if len(r.sites) > MARKDOWN_MAX_SITES:
            lines.append(f"\n… {len(r.sites) - MARKDOWN_MAX_SITES} more sites in the JSON report.")
    if r.notes:
        lines += ["", *[f"- {_cell(n)}" for n in r.notes]]
    return "\n".join(lines) + "\n"


# -- JUnit XML --------------------------------------------------------------------------------
JUNIT_SUITE = "gelu-quant.gate"


def to_junit_xml(r: AccuracyReport) -> str:
    """JUnit XML (the Ant/Jenkins dialect CI systems read): one test case per gate check."""
    checks = r.verdict.checks
    n, nf = len(checks), len(r.verdict.failed)
    root = ET.Element(
        "testsuites",
        {"name": "gelu-quant", "tests": str(n), "failures": str(nf), "errors": "0", "time": "0"},
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": JUNIT_SUITE,
            "tests": str(n),
            "failures": str(nf),
            "errors": "0",
            "skipped": "0",
            "time": "0",
        },
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("reference", r.reference.path),
        ("candidate", r.candidate.path),
        ("data", r.data_description),
        ("samples", str(r.samples)),
        ("tool_version", r.tool_version),
    ):
        ET.SubElement(props, "property", {"name": k, "value": v})
    for c in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"{JUNIT_SUITE}.{c.threshold}", "name": c.name, "time": "0"},
        )
        if not c.passed:
            fail = ET.SubElement(case, "failure", {"message": c.message, "type": "GateFailed"})
            fail.text = c.message
        else:
            out = ET.SubElement(case, "system-out")
            out.text = c.message
    summary = ET.SubElement(suite, "system-out")
    summary.text = f"gate {'passed' if r.passed else 'FAILED'}: {n - nf}/{n} checks hold"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
