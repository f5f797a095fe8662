"""The library call behind ``gelu-quant eval``: :func:`evaluate` and its :class:`EvalConfig`.

Both models run on every batch of the data source, each as a probe copy that also returns the
tensor compared for every GELU site (plus the sites' inputs when plots are asked for), and
streaming accumulators collect the metrics, so memory does not grow with the number of samples.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant import __version__
from gelu_quant.errors import BadInputError, DataError, ModelError
from gelu_quant.evaluate.accuracy_report import AccuracyReport, ModelInfo
from gelu_quant.evaluate.feeds import Feed, describe
from gelu_quant.evaluate.gate import GateConfig, check_applicable, judge
from gelu_quant.evaluate.labels import load_labels
from gelu_quant.evaluate.metrics import OutputAccumulator, OutputKind
from gelu_quant.evaluate.probe import ProbeSession, TensorSpec, load_model
from gelu_quant.evaluate.site_comparison import (
    QuantizedOutput,
    SiteAccumulator,
    SiteMetrics,
    SitePlan,
    plan_sites,
    quantized_input_ranges,
    rank_worst_first,
)
from gelu_quant.graph.sites import GeluSite
from gelu_quant.token_mask import token_mask

_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate a candidate against its reference."""

    gate: GateConfig = field(default_factory=GateConfig)
    labels: Path | None = None
    """Labels file (see :mod:`gelu_quant.evaluate.labels`), aligned with the data's samples."""
    label_output: str | None = None
    """The classification output labels are scored on (None: the only classification output)."""
    classification_outputs: tuple[str, ...] | None = None
    """Outputs to treat as ``[batch, classes]`` logits (None: every rank-2 float output)."""
    sites: tuple[GeluSite, ...] | None = None
    """GELU sites to compare (None: found in the reference by ``find_gelu_sites``)."""
    compare_sites: bool = True
    site_ranges: tuple[tuple[str, float, float], ...] = ()
    """``(site id, lo, hi)``: the approximation's input range per site, for plots and the report;
    overrides the range read from a QuantizeLinear on the site's input in the candidate."""
    manifest: Path | None = None
    """The conversion manifest of the candidate (``gelu-quant convert`` writes it): per-site
    input ranges, and the quantized outputs of converted QDQ sites."""
    plots_dir: Path | None = None
    """Write one PNG per site here (needs matplotlib, the ``plots`` extra)."""
    max_batches: int | None = None
    threads: int = 0
    """ORT intra-op threads per session (0: ORT's default)."""
    progress: bool = False
    """Show a progress bar on stderr."""
    include_padding: bool = False
    """Compare padded positions too (default: outputs and sites shaped ``[batch, seq, …]``
    are compared on the real tokens of the feed's ``attention_mask`` only)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rank(spec: TensorSpec) -> int | None:
    return None if spec.shape is None else len(spec.shape)


def check_interfaces(
    ref_inputs: Sequence[TensorSpec],
    ref_outputs: Sequence[TensorSpec],
    cand_inputs: Sequence[TensorSpec],
    cand_outputs: Sequence[TensorSpec],
) -> None:
    """Raise :class:`ModelError` naming every input/output that differs (name, type, rank)."""
    problems: list[str] = []
    for what, ref, cand in (
        ("input", ref_inputs, cand_inputs),
        ("output", ref_outputs, cand_outputs),
    ):
        r = {t.name: t for t in ref}
        c = {t.name: t for t in cand}
        only_r = [n for n in r if n not in c]
        only_c = [n for n in c if n not in r]
        if only_r:
            problems.append(f"{what}s only in the reference: {', '.join(only_r)}")
        if only_c:
            problems.append(f"{what}s only in the candidate: {', '.join(only_c)}")
        for n in r:
            if n not in c:
                continue
            if r[n].type != c[n].type:
                problems.append(f"{what} {n!r}: reference {r[n].type}, candidate {c[n].type}")
            elif None not in (_rank(r[n]), _rank(c[n])) and _rank(r[n]) != _rank(c[n]):
                problems.append(
                    f"{what} {n!r}: reference rank {_rank(r[n])}, candidate rank {_rank(c[n])}"
                )
    if problems:
        raise ModelError(
            "reference and candidate must have the same inputs and outputs; " + "; ".join(problems)
        )


def output_kinds(
    outputs: Sequence[TensorSpec], classification: tuple[str, ...] | None
) -> dict[str, OutputKind]:
    """Each output's kind: explicit list, or every rank-2 float output with > 1 classes."""
    names = [o.name for o in outputs]
    if classification is not None:
        unknown = [n for n in classification if n not in names]
        if unknown:
            raise BadInputError(
                f"classification outputs {', '.join(unknown)} are not model outputs "
                f"({', '.join(names)})"
            )
        return {n: ("classification" if n in classification else "tensor") for n in names}
    kinds: dict[str, OutputKind] = {}
    for o in outputs:
        is_cls = (
            o.type in _FLOAT_TYPES
            and o.shape is not None
            and len(o.shape) == 2
            and not (isinstance(o.shape[1], int) and o.shape[1] < 2)
        )
        kinds[o.name] = "classification" if is_cls else "tensor"
    return kinds


def read_manifest(
    path: Path,
) -> tuple[dict[str, tuple[float, float]], dict[str, QuantizedOutput]]:
    """Per-site input ranges and quantized outputs of converted sites, from a manifest."""
    from gelu_quant.graph.manifest import load_manifest_json

    d = load_manifest_json(path)
    ranges: dict[str, tuple[float, float]] = {}
    qouts: dict[str, QuantizedOutput] = {}
    try:
        for rec in d["sites"]:
            if rec.get("status") != "converted":
                continue
            rng = rec.get("range")
            if rng is not None:
                ranges[str(rec["id"])] = (float(rng[0]), float(rng[1]))
            q = rec.get("quantized_output")
            if q is not None:
                qouts[str(rec["id"])] = QuantizedOutput(
                    str(q["tensor"]), float(q["scale"]), int(q["zero_point"])
                )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise BadInputError(f"manifest {path} has a malformed site record: {e!r}") from None
    return ranges, qouts


def _find_sites(reference_path: Path) -> tuple[list[GeluSite], str | None]:
    try:
        from gelu_quant.graph.discover import find_gelu_sites
    except ImportError:
        return [], "GELU site discovery (gelu_quant.graph.discover) is not available"
    return list(find_gelu_sites(reference_path)), None


def _batch_size(outputs: dict[str, np.ndarray], first_output: str) -> int:
    y = outputs[first_output]
    return int(y.shape[0]) if y.ndim else 1


def _reason(plan: SitePlan | str) -> str | None:
    return plan if isinstance(plan, str) else None


def evaluate(
    reference: Path,
    candidate: Path,
    data: Iterable[Feed],
    config: EvalConfig = EvalConfig(),
) -> AccuracyReport:
    """Run both models on ``data`` and measure how the candidate differs; judge the gate.

    Raises :class:`ModelError` when the models cannot be opened or do not match,
    :class:`DataError` when the data or labels do not fit, :class:`BadInputError` when a
    threshold cannot be applied. The gate's failure is not raised here: see
    ``report.passed`` (the CLI raises :class:`~gelu_quant.errors.GateFailed`).
    """
    reference, candidate = Path(reference), Path(candidate)
    notes: list[str] = []
    plot_writer = None
    if config.plots_dir is not None:
        from gelu_quant.evaluate.plots import require_matplotlib

        plot_writer = require_matplotlib()

    labels: npt.NDArray[np.int64] | None = None
    if config.labels is not None:
        labels = load_labels(config.labels)

    # Sites: explicit, discovered, or none.
    sites: list[GeluSite] = []
    if config.compare_sites:
        if config.sites is not None:
            sites = list(config.sites)
        else:
            sites, why = _find_sites(reference)
            if why:
                notes.append(f"sites not compared: {why}")

    ref_model = load_model(reference)
    cand_model = load_model(candidate)
    manifest_ranges, qouts = ({}, {}) if config.manifest is None else read_manifest(config.manifest)
    plans = plan_sites(ref_model, cand_model, sites, qouts)
    ranges = quantized_input_ranges(cand_model, sites, str(candidate.resolve().parent))
    ranges.update(manifest_ranges)
    for sid, lo, hi in config.site_ranges:
        ranges[sid] = (float(lo), float(hi))
    live: list[tuple[GeluSite, SitePlan]] = []
    for s in sites:
        plan = plans[s.id]
        if isinstance(plan, SitePlan):
            live.append((s, plan))
    # Site inputs (and the candidate's float site outputs beside a dequantized comparison) are
    # only needed for the plots; leaving them out halves what each batch returns.
    plot_data = plot_writer is not None
    ref_probe = sorted(
        {t for s, p in live for t in ((p.ref_tensor, s.input) if plot_data else (p.ref_tensor,))}
    )
    cand_probe = sorted(
        {
            t
            for s, p in live
            for t in ((p.cand_tensor, s.input, s.output) if plot_data else (p.cand_tensor,))
        }
    )
    del ref_model, cand_model

    with (
        ProbeSession(reference, ref_probe, threads=config.threads) as ref_sess,
        ProbeSession(candidate, cand_probe, threads=config.threads) as cand_sess,
    ):
        check_interfaces(ref_sess.inputs, ref_sess.outputs, cand_sess.inputs, cand_sess.outputs)
        if not ref_sess.outputs:
            raise ModelError(f"{reference} has no outputs to compare")
        kinds = output_kinds(ref_sess.outputs, config.classification_outputs)
        label_output = _label_output(kinds, config.label_output, labels is not None)
        check_applicable(config.gate, kinds, labels is not None, label_output)

        accs = {o.name: OutputAccumulator(o.name, kinds[o.name]) for o in ref_sess.outputs}
        site_accs = [SiteAccumulator(s, p, with_plot_data=plot_data) for s, p in live]

        masked: set[str] = set()
        batches, offset = _stream(
            data, config, ref_sess, cand_sess, accs, site_accs, labels, label_output, masked
        )
        if masked:
            notes.append(
                f"padding excluded: {', '.join(sorted(masked))} (and the GELU sites) compared on "
                "the real tokens of attention_mask only; --include-padding compares every position"
            )

    if batches == 0:
        raise DataError("the data source yielded no batches; nothing was evaluated")
    if labels is not None and offset != labels.shape[0]:
        raise DataError(
            f"{labels.shape[0]} labels in {config.labels} for {offset} evaluated samples; "
            "labels must align one per sample with the data (or drop --max-batches)"
        )

    plots: dict[str, str] = {}
    if plot_writer is not None and config.plots_dir is not None:
        plots = plot_writer(config.plots_dir, site_accs, ranges)

    site_metrics = _site_metrics(sites, plans, site_accs, ranges, plots)
    outputs = tuple(a.result() for a in accs.values())
    return AccuracyReport(
        tool_version=__version__,
        reference=ModelInfo(str(reference), file_sha256(reference)),
        candidate=ModelInfo(str(candidate), file_sha256(candidate)),
        data_description=describe(data),
        samples=offset,
        batches=batches,
        outputs=outputs,
        sites=tuple(rank_worst_first(site_metrics)),
        gate=config.gate,
        verdict=judge(config.gate, outputs),
        notes=tuple(notes),
    )


def _label_output(kinds: Mapping[str, str], named: str | None, have_labels: bool) -> str | None:
    """The classification output the labels score: the named one, or the only one."""
    cls_outputs = [n for n, k in kinds.items() if k == "classification"]
    if named is not None and kinds.get(named) != "classification":
        raise BadInputError(
            f"label output {named!r} is not a classification output; those are: "
            f"{', '.join(cls_outputs) or 'none'}"
        )
    if have_labels and named is None:
        if len(cls_outputs) != 1:
            raise BadInputError(
                "labels need exactly one classification output to score, found "
                f"{len(cls_outputs)} ({', '.join(cls_outputs) or 'none'}); name one with "
                "label_output / --label-output"
            )
        return cls_outputs[0]
    return named


def _stream(
    data: Iterable[Feed],
    config: EvalConfig,
    ref_sess: ProbeSession,
    cand_sess: ProbeSession,
    accs: dict[str, OutputAccumulator],
    site_accs: list[SiteAccumulator],
    labels: npt.NDArray[np.int64] | None,
    label_output: str | None,
    masked: set[str],
) -> tuple[int, int]:
    """Run both models batch by batch, updating the accumulators: ``(batches, samples)``;
    ``masked`` collects the outputs compared on real tokens only."""
    input_names = [i.name for i in ref_sess.inputs]
    first_output = ref_sess.outputs[0].name
    batches = 0
    offset = 0
    iterator: Iterable[Feed] = data
    if config.progress:
        from tqdm import tqdm

        iterator = tqdm(data, desc="eval", unit="batch", file=sys.stderr)
    for feed in iterator:
        if config.max_batches is not None and batches >= config.max_batches:
            break
        missing = [n for n in input_names if n not in feed]
        if missing:
            raise DataError(f"a batch from the data source lacks model inputs {', '.join(missing)}")
        f = {n: np.asarray(feed[n]) for n in input_names}
        ref_out = ref_sess.run(f)
        cand_out = cand_sess.run(f)
        n = _batch_size(ref_out, first_output)
        batch_labels = None
        if labels is not None:
            if offset + n > labels.shape[0]:
                raise DataError(
                    f"{labels.shape[0]} labels in {config.labels}, but the data has more "
                    "samples; labels must align one per sample with the data"
                )
            batch_labels = labels[offset : offset + n]
        masks = None if config.include_padding else f
        for name, acc in accs.items():
            r = np.asarray(ref_out[name])
            mask = None if masks is None else _output_mask(masks, r.shape)
            if mask is not None:
                masked.add(name)
            acc.update(r, cand_out[name], batch_labels if name == label_output else None, mask)
        for sa in site_accs:
            sa.update(ref_out, cand_out, masks)
        offset += n
        batches += 1
        del ref_out, cand_out, f

    return batches, offset


def _output_mask(feed: Feed, shape: tuple[int, ...]) -> npt.NDArray[np.bool_] | None:
    """The real-token mask of an output ``[batch, seq, C]`` (rank 3 only: a rank-4 output's
    second axis is not the sequence in general)."""
    return token_mask(feed, tuple(shape))


def _site_metrics(
    sites: list[GeluSite],
    plans: dict[str, Any],
    site_accs: list[SiteAccumulator],
    ranges: dict[str, tuple[float, float]],
    plots: dict[str, str],
) -> list[SiteMetrics]:
    """Each site's comparison (or why it could not be compared)."""
    by_id = {sa.site.id: sa for sa in site_accs}
    return [
        SiteMetrics(
            id=s.id,
            input=s.input,
            output=s.output,
            form=s.form,
            comparable=s.id in by_id,
            reason=_reason(plans[s.id]),
            errors=by_id[s.id].errors.result() if s.id in by_id else None,
            input_range=ranges.get(s.id),
            plot=plots.get(s.id),
            compared=by_id[s.id].plan.label if s.id in by_id else None,
        )
        for s in sites
    ]
