"""``gelu-quant sweep``: every target × range method × table count measured on the same data.

One run converts the model once per configuration (with one ranges file, calibrated beforehand
on calibration data), evaluates each converted model against the fp32 model on the given
evaluation data (:func:`gelu_quant.evaluate.evaluator.evaluate`, outputs only), times it against
the fp32 model side by side, and writes the accuracy-vs-cost table a user picks from:

* ``sweep.json`` — one row per configuration: the error figures of every output, the device
  cost (bytes of tables / coefficients over all sites, from each spec's ``arrays()``), the
  latency ratio to fp32, whether the row is on the Pareto front, or why it failed;
* ``sweep.md`` / ``sweep.csv`` — the same table for people and spreadsheets;
* ``sweep.png`` — error against bytes, log scales, the Pareto front's rows in blue (needs
  matplotlib).

A configuration's error is the largest ``1 − mean cosine`` over the scored outputs (all by
default; ``score_outputs`` picks them, e.g. MiniLM's ``sentence_embedding``; with labels also the
accuracy drop); the Pareto front is over (bytes, error, latency): no other row is at least as
small in all three and smaller in one.

The sweep converts with ``verify=False``: it measures every converted model in ONNX Runtime, so
what it reports is what the runtime computes; ``convert`` proves the bodies equal to their
tables when the chosen configuration is converted for real.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gelu_quant.errors import BadInputError, GeluQuantError

Log = Callable[[str], None]

DEFAULT_TARGETS: tuple[str, ...] = (
    "int8-lut",
    "uint8-lut",
    "int8-lut-fp16out",
    "int8-pwl16",
    "int8-pwl32",
    "int8-interp32",
    "int6-lut",
    "fp16-poly",
    "fp32-poly",
)
DEFAULT_GROUPS: tuple[int, ...] = (1, 8)


@dataclass(frozen=True)
class SweepPoint:
    """One configuration: ``convert --target T [--method M] [--groups K]``."""

    target: str
    method: str | None
    groups: int = 1

    @property
    def label(self) -> str:
        m = f" {self.method}" if self.method else ""
        g = f" ×{self.groups}" if self.groups > 1 else ""
        return f"{self.target}{m}{g}"


@dataclass
class SweepRow:
    """What one configuration measured (``error`` None: the conversion or run failed)."""

    target: str
    method: str | None
    groups: int
    label: str
    sites_converted: int = 0
    table_bytes: int = 0
    error: float | None = None
    """Largest 1 − mean cosine over the outputs."""
    worst_cosine: float | None = None
    """Smallest per-sample cosine over the outputs."""
    accuracy_drop: float | None = None
    """Percentage points, with labels."""
    latency_ratio: float | None = None
    """Converted / fp32 latency, best of the rounds, measured interleaved."""
    latency_ms: float | None = None
    outputs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    pareto: bool = False
    failed: str | None = None


def sweep_points(
    targets: Sequence[str], methods: Sequence[str], groups: Sequence[int]
) -> list[SweepPoint]:
    """The configurations to run: every target with every method and table count it takes.

    Range methods apply to targets built from a range (tables, interpolated tables, standard
    ops), table counts above 1 to 8-bit table targets; polynomials and formula baselines run
    once.
    """
    from gelu_quant.graph.targets import TARGETS

    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise BadInputError(
            f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}"
        )
    if not targets:
        raise BadInputError("no targets to sweep")
    pts: list[SweepPoint] = []
    for name in targets:
        t = TARGETS[name]
        if t.kind in ("poly", "baseline"):
            pts.append(SweepPoint(name, None, 1))
            continue
        grouped_ok = t.kind == "lut" and t.in_dtype in ("int8", "uint8") and t.bits == 8
        ks = [k for k in groups if k == 1 or grouped_ok]
        for m in methods:
            for k in ks or [1]:
                pts.append(SweepPoint(name, m, k))
    return list(dict.fromkeys(pts))


def _costs(r: SweepRow) -> tuple[float, float, float]:
    assert r.error is not None
    lat = r.latency_ratio if r.latency_ratio is not None else math.inf
    return (float(r.table_bytes), r.error, lat)


def pareto_front(rows: Sequence[SweepRow]) -> None:
    """Mark the rows no other row dominates in (bytes, error, latency): none is at least as
    good in all three and better in one (a small float polynomial does not hide the int8
    tables that run at fp32 speed)."""
    ok = [r for r in rows if r.error is not None]
    for r in rows:
        r.pareto = False
    for r in ok:
        c = _costs(r)
        r.pareto = not any(
            o is not r
            and all(a <= b for a, b in zip(_costs(o), c, strict=True))
            and any(a < b for a, b in zip(_costs(o), c, strict=True))
            for o in ok
        )


def _spec_bytes(manifest_sites: Iterable[Any]) -> tuple[int, int]:
    from gelu_quant.lut.spec import spec_from_json

    n, total = 0, 0
    for s in manifest_sites:
        if s.status != "converted" or s.spec is None:
            continue
        n += 1
        total += spec_from_json(s.spec).array_bytes
    return n, total


def _run_time(sess: Any, feed: dict[str, np.ndarray]) -> float:
    t = time.perf_counter()
    sess.run(None, feed)
    return time.perf_counter() - t


def measure_latency(
    reference: Path, candidate: Path, feed: dict[str, np.ndarray], rounds: int, threads: int
) -> tuple[float, float]:
    """(candidate seconds, reference seconds): best of ``rounds`` interleaved runs each."""
    from gelu_quant.calib.collector import make_session

    ref, cand = make_session(reference, threads=threads), make_session(candidate, threads=threads)
    names = {i.name for i in ref.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in names}
    for s in (ref, cand):  # warm-up
        s.run(None, feed)
    best_r = best_c = math.inf
    for _ in range(rounds):
        best_r = min(best_r, _run_time(ref, feed))
        best_c = min(best_c, _run_time(cand, feed))
    return best_c, best_r


def run_sweep(
    model: Path,
    ranges_path: Path,
    data: Iterable[dict[str, np.ndarray]],
    points: Sequence[SweepPoint],
    *,
    labels: Path | None = None,
    classification_outputs: tuple[str, ...] | None = None,
    latency_rounds: int = 10,
    threads: int = 1,
    keep_models: Path | None = None,
    force: bool = False,
    score_outputs: Sequence[str] | None = None,
    log: Log | None = None,
) -> list[SweepRow]:
    """Convert, evaluate and time ``model`` for every point; a point that fails is a row with
    ``failed`` set (the sweep goes on). ``keep_models``: a folder to keep the converted models
    in (default: they are deleted)."""
    from gelu_quant.calib.ranges_file import load_ranges
    from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
    from gelu_quant.graph.convert import ConvertConfig, convert_file

    say = log or (lambda _m: None)
    ranges = load_ranges(ranges_path)
    ranges.check_model(model, force=force)
    feed = next(iter(data), None)
    if feed is None:
        raise BadInputError("the evaluation data has no batches")
    rows: list[SweepRow] = []
    with tempfile.TemporaryDirectory(prefix="gq-sweep-") as tmp:
        folder = keep_models if keep_models is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(points):
            row = SweepRow(p.target, p.method, p.groups, p.label)
            rows.append(row)
            say(f"[{i + 1}/{len(points)}] {p.label}")
            out = folder / f"{i:03d}-{_slug(p.label)}.onnx"
            try:
                cfg = ConvertConfig(
                    target=p.target, method=p.method, groups=p.groups, force=force, verify=False
                )
                res = convert_file(model, out, cfg, ranges=ranges)
                row.sites_converted, row.table_bytes = _spec_bytes(res.manifest.sites)
                if row.sites_converted == 0:
                    raise BadInputError("no site converted")
                rep = evaluate(
                    model,
                    out,
                    data,
                    EvalConfig(
                        labels=labels,
                        classification_outputs=classification_outputs,
                        compare_sites=False,
                        threads=threads,
                    ),
                )
                tc, tr = measure_latency(model, out, feed, latency_rounds, threads)
            except GeluQuantError as e:
                row.failed = " ".join(str(e).split())
                say(f"    failed: {row.failed}")
                continue
            row.outputs = {
                o.name: {
                    "one_minus_cos": 1.0 - o.cosine_mean,
                    "worst_cos": o.cosine_min,
                    "accuracy_drop": o.accuracy_drop,
                }
                for o in rep.outputs
            }
            scored = [o for o in rep.outputs if score_outputs is None or o.name in score_outputs]
            if not scored:
                have = ", ".join(o.name for o in rep.outputs)
                raise BadInputError(
                    f"no output named {', '.join(score_outputs or ())}; the model has {have}"
                )
            row.error = max(1.0 - o.cosine_mean for o in scored)
            row.worst_cosine = min(o.cosine_min for o in scored)
            drops = [o.accuracy_drop for o in rep.outputs if o.accuracy_drop is not None]
            row.accuracy_drop = max(drops) if drops else None
            row.latency_ratio, row.latency_ms = tc / tr, tc * 1e3
            say(
                f"    1-cos {row.error:.3g}, worst {row.worst_cosine:.5f}, "
                f"{row.table_bytes} B, latency {row.latency_ratio:.2f}x fp32"
            )
    pareto_front(rows)
    return rows


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


_COLUMNS = (
    "label",
    "target",
    "method",
    "groups",
    "sites_converted",
    "table_bytes",
    "error",
    "worst_cosine",
    "accuracy_drop",
    "latency_ratio",
    "latency_ms",
    "pareto",
    "failed",
)


def to_json(rows: Sequence[SweepRow], meta: dict[str, Any]) -> str:
    doc = {"schema": "gelu-quant/sweep", "schema_version": 1, **meta}
    doc["rows"] = [asdict(r) for r in rows]
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def to_csv(rows: Sequence[SweepRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_COLUMNS)
    for r in rows:
        d = asdict(r)
        w.writerow(["" if d[c] is None else d[c] for c in _COLUMNS])
    return buf.getvalue()


def _fmt(v: float | None, f: str) -> str:
    return "–" if v is None else format(v, f)


def to_markdown(rows: Sequence[SweepRow]) -> str:
    lines = [
        "| configuration | bytes | 1 − cos | worst cos | acc. drop (pp) | latency × fp32 | front |",
        "|---|---|---|---|---|---|---|",
    ]
    ok = sorted((r for r in rows if r.error is not None), key=lambda r: (r.table_bytes, r.error))
    for r in ok:
        lines.append(
            f"| {r.label} | {r.table_bytes} | {_fmt(r.error, '.3e')} | "
            f"{_fmt(r.worst_cosine, '.5f')} | {_fmt(r.accuracy_drop, '.2f')} | "
            f"{_fmt(r.latency_ratio, '.2f')} | {'★' if r.pareto else ''} |"
        )
    for r in rows:
        if r.failed is not None:
            lines.append(f"| {r.label} | failed: {r.failed} | | | | | |")
    return "\n".join(lines) + "\n"


def write_plot(rows: Sequence[SweepRow], path: Path) -> bool:
    """Error against bytes with the Pareto front; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from gelu_quant.fileio import write_bytes_atomic

    ok = [r for r in rows if r.error is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in ok:
        assert r.error is not None
        ax.scatter(
            max(r.table_bytes, 1), max(r.error, 1e-9), s=18, color="C0" if r.pareto else "C7"
        )
        ax.annotate(r.label, (max(r.table_bytes, 1), max(r.error, 1e-9)), fontsize=6)
    front = sorted((r for r in ok if r.pareto), key=lambda r: r.table_bytes)
    if front:
        ax.plot(
            [max(r.table_bytes, 1) for r in front],
            [max(r.error or 0.0, 1e-9) for r in front],
            color="C0",
            linewidth=0.8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes of tables / coefficients, all sites")
    ax.set_ylabel("1 − mean cosine to fp32 (worst output)")
    ax.set_title("gelu-quant sweep: accuracy vs cost (blue: Pareto front in bytes, error, latency)")
    ax.grid(True, which="both", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return True
