"""``convert --target auto --budget B``: per site, the cheapest approximation that keeps the
model's measured output error within the budget.

The error is measured, never modelled: the converted model runs in ONNX Runtime on the given
data (a held-out part of the calibration data, never the evaluation data) and is compared with
the fp32 model's outputs, computed once: ``error`` = the largest ``1 − mean per-sample cosine``
over the model's outputs (or the ones ``--score-output`` names).

1. **Each site alone.** For every candidate (cheapest first) and every site, the model with only
   that site converted is measured: the error the site adds, and the bytes its tables take
   (``spec.arrays()``). A site stops trying costlier candidates once one adds (almost) nothing.
2. **Allocation.** Every site starts at its cheapest candidate; while the sum of the sites'
   errors exceeds the allotment, the upgrade with the largest error decrease per added byte is
   taken. (Site errors add up closely: on all-MiniLM-L6-v2 the sum of the six alone errors is
   within 2 % of the joint error.)
3. **Joint check.** The whole choice is converted and measured. Over budget: the allotment is
   scaled down by the measured excess and step 2 is redone, at most ``rounds`` times; when every
   site is at its best candidate and the model is still over budget, the budget is unreachable
   (``BadInputError`` with the best figure, nothing is written).

The decision — the budget, the data, every site's candidates with their measured error and
bytes, the choice, and the joint measurement — goes into the manifest as ``auto``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gelu_quant.errors import BadInputError

Log = Callable[[str], None]

DEFAULT_CANDIDATES: tuple[str, ...] = (
    "int8-lut",
    "int8-lut:2",
    "int8-lut-fp16out",
    "int8-lut:4",
    "int8-lut:8",
    "int8-lut-fp16out:8",
)
"""int8 input throughout (what an int8 pipeline feeds): one table, grouped tables, float16
output. Ordered roughly by cost; the allocation orders by measured bytes."""

NEGLIGIBLE = 1e-7
"""A site whose alone error is below this tries no costlier candidate."""


@dataclass(frozen=True)
class Candidate:
    target: str
    groups: int = 1

    @property
    def label(self) -> str:
        return self.target if self.groups == 1 else f"{self.target}:{self.groups}"


def parse_candidates(items: Iterable[str]) -> list[Candidate]:
    """``TARGET`` or ``TARGET:K`` (K tables per site) strings."""
    from gelu_quant.graph.targets import TARGETS

    out: list[Candidate] = []
    for item in items:
        name, _, k = item.partition(":")
        if name not in TARGETS or TARGETS[name].kind == "standard":
            raise BadInputError(f"auto candidate {item!r}: {name!r} is not a gelu_quant target")
        try:
            groups = int(k) if k else 1
        except ValueError:
            raise BadInputError(f"auto candidate {item!r}: K must be an integer") from None
        out.append(Candidate(name, groups))
    if not out:
        raise BadInputError("no auto candidates")
    return list(dict.fromkeys(out))


class OutputProbe:
    """The fp32 model's outputs on the data, once; the error of any converted model on it."""

    def __init__(
        self,
        reference: Path,
        data: Iterable[dict[str, np.ndarray]],
        threads: int,
        outputs: Sequence[str] | None = None,
    ):
        self.threads = threads
        sess = self._session(reference)
        names = {i.name for i in sess.get_inputs()}
        have = [o.name for o in sess.get_outputs()]
        unknown = [o for o in outputs or () if o not in have]
        if unknown:
            raise BadInputError(
                f"no output named {', '.join(unknown)}; the model has {', '.join(have)}"
            )
        self.outputs = list(outputs) if outputs else have
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in data]
        if not self.feeds:
            raise BadInputError("the --data for auto has no batches")
        self.reference = [sess.run(self.outputs, f) for f in self.feeds]
        self.samples = sum(
            int(np.asarray(r[0]).shape[0]) if np.ndim(r[0]) else 1 for r in self.reference
        )

    def _session(self, path: Path) -> Any:
        from gelu_quant.calib.collector import make_session

        return make_session(path, threads=self.threads)

    def error(self, candidate: Path) -> tuple[float, float]:
        """(largest 1 − mean cosine over outputs, smallest per-sample cosine)."""
        from gelu_quant.evaluate.metrics import sample_cosines

        sess = self._session(candidate)
        cos: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for feed, ref in zip(self.feeds, self.reference, strict=True):
            got = sess.run(self.outputs, feed)
            for i, (r, c) in enumerate(zip(ref, got, strict=True)):
                cos[i].append(sample_cosines(r, c))
        per = [np.concatenate(c) for c in cos]
        return max(1.0 - float(c.mean()) for c in per), min(float(c.min()) for c in per)


@dataclass
class _Measured:
    error: float
    worst: float
    bytes: int


def _site_bytes(manifest: Any, site: str) -> int:
    from gelu_quant.lut.spec import spec_from_json

    rec = manifest.site(site)
    if rec.status != "converted" or rec.spec is None:
        raise BadInputError(f"site {site}: not converted ({rec.reason})")
    return spec_from_json(rec.spec).array_bytes


def _allocate(
    sites: Sequence[str], table: dict[str, dict[Candidate, _Measured]], allot: float
) -> dict[str, Candidate]:
    """Cheapest start, then the best error-per-byte upgrades until the sum fits ``allot``."""
    opts = {s: sorted(table[s].items(), key=lambda kv: (kv[1].bytes, kv[1].error)) for s in sites}
    pick = {s: opts[s][0][0] for s in sites}

    def total() -> float:
        return sum(table[s][pick[s]].error for s in sites)

    while total() > allot:
        best: tuple[float, str, Candidate] | None = None
        for s in sites:
            cur = table[s][pick[s]]
            for c, m in opts[s]:
                gain = cur.error - m.error
                if gain <= 0:
                    continue
                # better and no costlier: always worth taking first
                rate = gain / (m.bytes - cur.bytes) if m.bytes > cur.bytes else math.inf
                if best is None or rate > best[0]:
                    best = (rate, s, c)
        if best is None:
            break
        pick[best[1]] = best[2]
    return pick


def choose(
    model: Path,
    ranges: Any,
    data: Iterable[dict[str, np.ndarray]],
    budget: float,
    *,
    candidates: Sequence[Candidate],
    method: str | None = None,
    force: bool = False,
    threads: int = 1,
    rounds: int = 4,
    data_description: str = "",
    score_outputs: Sequence[str] | None = None,
    log: Log | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """The per-site choices (``SiteChoice``) and the decision record for the manifest."""
    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.graph.discover import find_gelu_sites
    from gelu_quant.graph.targets import SiteChoice

    if not (np.isfinite(budget) and budget > 0):
        raise BadInputError(f"--budget must be a positive number, got {budget}")
    say = log or (lambda _m: None)
    probe = OutputProbe(model, data, threads, score_outputs)
    sites = [s.id for s in find_gelu_sites(model) if not s.in_subgraph]
    if not sites:
        raise BadInputError("the model has no main-graph GELU site to choose for")
    table: dict[str, dict[Candidate, _Measured]] = {s: {} for s in sites}
    with tempfile.TemporaryDirectory(prefix="gq-auto-") as tmp:
        out = Path(tmp) / "m.onnx"

        def run(cfg: ConvertConfig) -> tuple[Any, float, float]:
            res = convert_file(model, out, cfg, ranges=ranges)
            e, w = probe.error(out)
            return res, e, w

        done: set[str] = set()
        for c in candidates:
            for s in sites:
                if s in done:
                    continue
                cfg = ConvertConfig(
                    target=c.target,
                    method=method,
                    groups=c.groups,
                    sites=(s,),
                    force=force,
                    verify=False,
                )
                try:
                    res, e, w = run(cfg)
                    nbytes = _site_bytes(res.manifest, s)
                except BadInputError as err:
                    say(f"  {s} {c.label}: not possible ({err})")
                    continue
                table[s][c] = _Measured(e, w, nbytes)
                say(f"  {s} {c.label}: alone 1-cos {e:.3g}, {nbytes} B")
                if e < NEGLIGIBLE:
                    done.add(s)
        empty = [s for s in sites if not table[s]]
        if empty:
            raise BadInputError(f"no candidate converts site(s) {', '.join(empty)}")
        allot, history = budget, []
        for _ in range(rounds):
            pick = _allocate(sites, table, allot)
            choices = [SiteChoice(s, pick[s].target, method, pick[s].groups) for s in sites]
            cfg = ConvertConfig(
                target=candidates[0].target,
                method=method,
                force=force,
                verify=False,
                site_choices=tuple(choices),
            )
            _, e, w = run(cfg)
            nbytes = sum(table[s][pick[s]].bytes for s in sites)
            history.append({"allotment": allot, "error": e, "worst_cos": w, "bytes": nbytes})
            say(f"  joint: 1-cos {e:.3g} (allotment {allot:.3g}), {nbytes} B")
            if e <= budget:
                break
            at_best = all(
                table[s][pick[s]].error <= min(m.error for m in table[s].values()) for s in sites
            )
            if at_best:
                tried = ", ".join(c.label for c in candidates)
                raise BadInputError(
                    f"budget {budget:g} is not reachable with {tried}: the best choice measures "
                    f"1 - cos {e:.3g} on this data; raise the budget "
                    "or add costlier candidates (--auto-candidates)"
                )
            allot *= 0.9 * budget / e
        else:
            raise BadInputError(
                f"budget {budget:g} not met after {rounds} rounds (last 1 - cos {e:.3g}); "
                "raise the budget"
            )
    decision = {
        "budget": budget,
        "metric": "max over outputs of 1 - mean per-sample cosine to fp32",
        "outputs": probe.outputs,
        "data": data_description,
        "samples": probe.samples,
        "method": method,
        "candidates": [c.label for c in candidates],
        "sites": {
            s: {
                "choice": pick[s].label,
                "measured": {
                    c.label: {"error_alone": m.error, "worst_cos": m.worst, "bytes": m.bytes}
                    for c, m in table[s].items()
                },
            }
            for s in sites
        },
        "rounds": history,
        "error": history[-1]["error"],
        "worst_cos": history[-1]["worst_cos"],
        "bytes": history[-1]["bytes"],
    }
    return choices, decision
