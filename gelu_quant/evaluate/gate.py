"""The accuracy gate: thresholds, where they come from, and the verdict.

Thresholds come from command-line flags or from the ``[tool.gelu-quant.gate]`` table of a TOML
file (e.g. ``pyproject.toml``); flags override the file. Keys (dashes or underscores)::

    [tool.gelu-quant.gate]
    max-accuracy-drop = 0.5      # percentage points, needs labels
    min-cosine = 0.999           # mean per-sample cosine, every gated output
    min-worst-cosine = 0.99      # smallest per-sample cosine, every gated output
    min-sqnr = 30.0              # dB, every gated output
    min-top1-agreement = 0.99    # fraction, classification outputs
    outputs = ["logits"]         # optional: gate only these outputs (default: all)

Each threshold yields one check per output it applies to; the gate passes when every check does.
A threshold that applies to no output is bad input (it could never fail), not a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from gelu_quant.errors import BadInputError
from gelu_quant.evaluate.metrics import OutputMetrics

ThresholdName = Literal[
    "max_accuracy_drop", "min_cosine", "min_worst_cosine", "min_sqnr", "min_top1_agreement"
]
THRESHOLDS: tuple[ThresholdName, ...] = (
    "max_accuracy_drop",
    "min_cosine",
    "min_worst_cosine",
    "min_sqnr",
    "min_top1_agreement",
)


@dataclass(frozen=True)
class GateConfig:
    """Accuracy thresholds; None means "not gated"."""

    max_accuracy_drop: float | None = None
    """Largest allowed task-accuracy drop in percentage points (needs labels)."""
    min_cosine: float | None = None
    """Smallest allowed mean per-sample cosine similarity."""
    min_worst_cosine: float | None = None
    """Smallest allowed per-sample cosine similarity (the worst sample)."""
    min_sqnr: float | None = None
    """Smallest allowed SQNR in dB."""
    min_top1_agreement: float | None = None
    """Smallest allowed fraction of samples whose top-1 class agrees (classification outputs)."""
    outputs: tuple[str, ...] | None = None
    """Gate only these model outputs (None: all)."""

    def __post_init__(self) -> None:
        for name in THRESHOLDS:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise BadInputError(f"gate threshold {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.outputs is not None:
            object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def active(self) -> dict[ThresholdName, float]:
        """The thresholds that are set, in a fixed order."""
        out: dict[ThresholdName, float] = {}
        for n in THRESHOLDS:
            v = getattr(self, n)
            if v is not None:
                out[n] = v
        return out

    def merged(self, overrides: GateConfig) -> GateConfig:
        """This config with every field that ``overrides`` sets replaced."""
        changes = {f.name: getattr(overrides, f.name) for f in fields(overrides)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: getattr(self, n) for n in THRESHOLDS}
        d["outputs"] = None if self.outputs is None else list(self.outputs)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GateConfig:
        outs = d.get("outputs")
        return cls(
            **{n: d.get(n) for n in THRESHOLDS},
            outputs=None if outs is None else tuple(outs),
        )


def load_gate_config(path: Path) -> GateConfig:
    """Read ``[tool.gelu-quant.gate]`` from a TOML file (e.g. ``pyproject.toml``)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10 without tomli
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise BadInputError(
                "reading a gate config needs Python >= 3.11 (tomllib) or `pip install tomli`"
            ) from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"gate config {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInputError(f"cannot read gate config {path}: {e}") from None
    table = data.get("tool", {}).get("gelu-quant", {}).get("gate")
    if table is None:
        raise BadInputError(
            f"{path} has no [tool.gelu-quant.gate] table; add one or give thresholds as flags"
        )
    return gate_config_from_table(table, f"[tool.gelu-quant.gate] in {path}")


def gate_config_from_table(table: Mapping[str, Any], where: str = "gate table") -> GateConfig:
    """A :class:`GateConfig` from a parsed TOML table (keys with dashes or underscores).

    ``where`` names the table in error messages.
    """
    if not isinstance(table, Mapping):
        raise BadInputError(f"{where} must be a table")
    known = {*THRESHOLDS, "outputs"}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        k = key.replace("-", "_")
        if k not in known:
            allowed = ", ".join(n.replace("_", "-") for n in sorted(known))
            raise BadInputError(f"unknown key {key!r} in {where}; allowed: {allowed}")
        if k == "outputs":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise BadInputError(f"'outputs' in {where} must be a list of output names")
            kwargs[k] = tuple(value)
        else:
            kwargs[k] = value
    try:
        return GateConfig(**kwargs)
    except BadInputError as e:
        raise BadInputError(f"{where}: {e}") from None


@dataclass(frozen=True)
class GateCheck:
    """One threshold applied to one output."""

    threshold: ThresholdName
    output: str
    limit: float
    value: float
    passed: bool

    @property
    def name(self) -> str:
        """Stable test-case name, e.g. ``min_cosine[logits]``."""
        return f"{self.threshold}[{self.output}]"

    @property
    def message(self) -> str:
        op = "<=" if self.threshold.startswith("max_") else ">="
        verdict = "holds" if self.passed else "FAILS"
        return (
            f"{self.threshold} on {self.output}: {_fmt(self.value)} {op} {_fmt(self.limit)} "
            f"{verdict}"
        )


@dataclass(frozen=True)
class GateVerdict:
    """All checks and whether the gate passed (True when there are no checks)."""

    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _value(threshold: ThresholdName, m: OutputMetrics) -> float | None:
    if threshold == "max_accuracy_drop":
        return m.accuracy_drop
    if threshold == "min_cosine":
        return m.cosine_mean
    if threshold == "min_worst_cosine":
        return m.cosine_min
    if threshold == "min_sqnr":
        return m.errors.sqnr_db
    return m.top1_agreement


def applicable(threshold: ThresholdName, kind: str, has_labels: bool) -> bool:
    """Whether ``threshold`` can be measured on an output of ``kind``."""
    if threshold == "min_top1_agreement":
        return kind == "classification"
    if threshold == "max_accuracy_drop":
        return kind == "classification" and has_labels
    return True


def check_applicable(
    config: GateConfig,
    outputs: Mapping[str, str],
    has_labels: bool,
    label_output: str | None = None,
) -> None:
    """Raise :class:`BadInputError` when a threshold could not be measured on any gated output.

    ``outputs`` maps each model output name to its kind; ``label_output`` is the one output that
    labels are scored on.
    """
    if config.outputs is not None:
        missing = [o for o in config.outputs if o not in outputs]
        if missing:
            raise BadInputError(
                f"gate names outputs the models do not have: {', '.join(missing)}; "
                f"outputs are: {', '.join(outputs)}"
            )
    gated = {n: k for n, k in outputs.items() if config.outputs is None or n in config.outputs}
    for t in config.active:
        ok = any(
            applicable(t, k, has_labels and (label_output is None or n == label_output))
            for n, k in gated.items()
        )
        if not ok:
            flag = "--" + t.replace("_", "-")
            if t == "max_accuracy_drop" and not has_labels:
                why = "it needs --labels"
            elif t in ("max_accuracy_drop", "min_top1_agreement"):
                why = "no gated output is a [batch, classes] classification output"
            else:
                why = "no output is gated"
            raise BadInputError(f"cannot apply {flag}: {why}")


def judge(config: GateConfig, outputs: Sequence[OutputMetrics]) -> GateVerdict:
    """Apply every active threshold to every output it applies to.

    A value of NaN (e.g. from non-finite outputs) fails its check.
    """
    checks: list[GateCheck] = []
    for t, limit in config.active.items():
        for m in outputs:
            if config.outputs is not None and m.name not in config.outputs:
                continue
            v = _value(t, m)
            if v is None:
                continue
            ok = (v <= limit) if t.startswith("max_") else (v >= limit)
            checks.append(GateCheck(t, m.name, limit, float(v), bool(ok)))
    return GateVerdict(tuple(checks))
