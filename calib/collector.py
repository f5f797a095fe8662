"""The streaming collector: one ORT session on a probe model, statistics updated per batch.

The probe model is the user's model with its graph outputs replaced by

- each GELU site's pre-activation (for bias-folded sites an ``Add`` node materialises
  ``input + bias``), collected into a :class:`~gelu_quant.calib.stats.TensorStats`;
- each site's output, reduced inside the graph to a scalar ``ReduceMin`` and ``ReduceMax`` (the
  observed output range, for the record; the output range a table uses is derived from the input
  range).

Per batch the pre-activations are folded into the statistics and dropped, so memory does not
grow with the amount of data. Sites inside subgraphs (If/Loop bodies) cannot be exposed as graph
outputs and are reported in :attr:`Collected.skipped`.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from gelu_quant.calib.channel_hist import CHANNEL_BINS
from gelu_quant.calib.data import Feed, _batch_of
from gelu_quant.calib.protowire import replace_graph_outputs
from gelu_quant.calib.row_sample import DEFAULT_SAMPLE_ROWS, RowSample
from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import DataError, ModelError
from gelu_quant.graph.sites import GeluSite
from gelu_quant.modelfile import read_model_bytes, uses_external_data
from gelu_quant.token_mask import token_mask

_ELEM = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "float64": onnx.TensorProto.DOUBLE,
    "bfloat16": onnx.TensorProto.BFLOAT16,
}
_PREFIX = "gq_calib"


@dataclass
class Collected:
    """What one pass over the data produced."""

    stats: dict[str, TensorStats]
    """Pre-activation statistics per site id."""
    output_min: dict[str, float] = field(default_factory=dict)
    output_max: dict[str, float] = field(default_factory=dict)
    """Observed GELU output range per site id (NaN-free batches only)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Site id -> why it was not calibrated."""
    samples_of: dict[str, RowSample] = field(default_factory=dict)
    """Site id -> a bounded uniform sample of its input rows (real tokens only)."""
    batches: int = 0
    samples: int = 0
    seconds: float = 0.0

    def merge(self, other: Collected) -> None:
        """Add another pass's results (exact for the statistics)."""
        for sid, st in other.stats.items():
            if sid in self.stats:
                self.stats[sid].merge(st)
            else:
                self.stats[sid] = st.copy()
        for sid, v in other.output_min.items():
            self.output_min[sid] = min(self.output_min.get(sid, math.inf), v)
        for sid, v in other.output_max.items():
            self.output_max[sid] = max(self.output_max.get(sid, -math.inf), v)
        for sid, why in other.skipped.items():
            self.skipped.setdefault(sid, why)
        for sid, rs in other.samples_of.items():
            if sid in self.samples_of:
                self.samples_of[sid].merge(rs)
            else:
                self.samples_of[sid] = rs.copy()
        self.batches += other.batches
        self.samples += other.samples
        self.seconds += other.seconds


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def build_probe(
    model: onnx.ModelProto, sites: Sequence[GeluSite], *, in_place: bool = False
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str | None, str | None]], dict[str, str]]:
    """A copy of ``model`` (or ``model`` itself when ``in_place``) whose outputs are the sites'
    pre-activations and output min/max.

    Returns ``(probe, names, skipped)`` with ``names[site_id] = (input_output, min_output,
    max_output)`` naming the probe's graph outputs.
    """
    if in_place:
        probe = model
    else:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
    g = probe.graph
    del g.output[:]
    names: dict[str, tuple[str, str | None, str | None]] = {}
    skipped: dict[str, str] = {}
    exposed: set[str] = set()
    for site in sites:
        if site.in_subgraph:
            skipped[site.id] = f"inside subgraph {site.graph!r}: not reachable as a graph output"
            continue
        elem = _ELEM.get(site.dtype)
        if elem is None:
            skipped[site.id] = f"unsupported pre-activation dtype {site.dtype!r}"
            continue
        x = site.input
        if site.bias is not None:
            x = f"{_PREFIX}/{site.id}/input_plus_bias"
            g.node.append(
                onnx.helper.make_node(
                    "Add", [site.input, site.bias], [x], name=f"{_PREFIX}/{site.id}/bias_add"
                )
            )
        if x not in exposed:
            g.output.append(onnx.helper.make_tensor_value_info(x, elem, None))
            exposed.add(x)
        lo_name = f"{_PREFIX}/{site.id}/output_min"
        hi_name = f"{_PREFIX}/{site.id}/output_max"
        g.node.append(
            onnx.helper.make_node("ReduceMin", [site.output], [lo_name], name=lo_name, keepdims=0)
        )
        g.node.append(
            onnx.helper.make_node("ReduceMax", [site.output], [hi_name], name=hi_name, keepdims=0)
        )
        g.output.append(onnx.helper.make_tensor_value_info(lo_name, elem, []))
        g.output.append(onnx.helper.make_tensor_value_info(hi_name, elem, []))
        names[site.id] = (x, lo_name, hi_name)
    return probe, names, skipped


def make_session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    *,
    base_dir: Path | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """A CPU session for an in-memory model (external data resolved against ``base_dir``)."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # ORT's default spin-waiting intra-op threads are kept: with spinning off, MiniLM inference
    # ran 13 % slower here, and the calibration batch loop with it
    providers = ["CPUExecutionProvider"]
    try:
        if isinstance(model, bytes):
            return ort.InferenceSession(model, so, providers=providers)
        if not isinstance(model, onnx.ModelProto):
            return ort.InferenceSession(os.fspath(model), so, providers=providers)
        if not uses_external_data(model):
            data = model.SerializeToString()
            return ort.InferenceSession(data, so, providers=providers)
        # external data paths are relative to the model file: save the probe beside it
        folder = base_dir or Path.cwd()
        fd, tmp = tempfile.mkstemp(prefix=".gq-probe-", suffix=".onnx", dir=folder)
        os.close(fd)
        try:
            onnx.save(model, tmp)
            return ort.InferenceSession(tmp, so, providers=providers)
        finally:
            os.unlink(tmp)
    except Exception as e:
        raise ModelError(f"ONNX Runtime cannot load the calibration probe model: {e}") from None


def _update_sites(
    stats: Sequence[TensorStats],
    tensors: Sequence[np.ndarray],
    samples: Sequence[tuple[RowSample, np.random.Generator] | None],
    feed: Feed,
) -> None:
    for st, t, sample in zip(stats, tensors, samples, strict=True):
        st.update(t)
        if sample is not None:
            sample[0].update(t, sample[1], token_mask(feed, t.shape))


def _default_workers(n_sites: int) -> int:
    return max(1, min(n_sites, os.cpu_count() or 1, 4))


@dataclass
class Probe:
    """An ORT session on the probe model, with what :func:`build_probe` named."""

    session: ort.InferenceSession | None
    """None when no site can be probed."""
    names: dict[str, tuple[str, str | None, str | None]]
    skipped: dict[str, str]


def open_probe(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    sites: Sequence[GeluSite],
    *,
    threads: int | None = None,
    base_dir: Path | None = None,
    consume: bool = False,
) -> Probe:
    """Build the probe model of ``model`` and open an ORT session on it.

    ``model`` is a path, a loaded model, or the bytes of a model whose weights are inline (no
    external data). A loaded model whose weights live in external files needs ``base_dir``,
    the model's folder. With ``consume``, a loaded model becomes the probe in place (no copy
    of the weights; the caller must not use it afterwards).

    Inline weights are never re-serialized: the probe is spliced from the file's bytes
    (:func:`~gelu_quant.calib.protowire.replace_graph_outputs`).
    """
    if isinstance(model, bytes):
        return _open_spliced(model, sites, threads)
    if not isinstance(model, onnx.ModelProto):
        path = Path(os.fspath(model))
        raw, loaded = read_model_bytes(path)
        if not uses_external_data(loaded):
            del loaded
            return _open_spliced(raw, sites, threads)
        del raw
        # our own copy: build the probe in place (one copy of the weights in Python, not two)
        model, consume, base_dir = loaded, True, path.resolve().parent
    probe, names, skipped = build_probe(model, sites, in_place=consume)
    del model
    if not names:
        return Probe(None, names, skipped)
    if uses_external_data(probe):
        session = make_session(probe, base_dir=base_dir, threads=threads)
    else:
        serialized = probe.SerializeToString()
        del probe  # one copy of the weights at a time: the bytes, then ORT's own
        session = make_session(serialized, threads=threads)
        del serialized
    return Probe(session, names, skipped)


def _open_spliced(raw: bytes, sites: Sequence[GeluSite], threads: int | None) -> Probe:
    """:func:`open_probe` of serialized model bytes with inline weights."""
    shell = onnx.ModelProto()  # build_probe's additions alone: new nodes and outputs
    _, names, skipped = build_probe(shell, sites, in_place=True)
    if not names:
        return Probe(None, names, skipped)
    data = replace_graph_outputs(raw, shell.graph.SerializeToString())
    if data is None:  # an unusual byte layout: edit the parsed model instead
        try:
            parsed = onnx.load_model_from_string(raw)
        except Exception as e:
            raise ModelError(f"cannot read ONNX model: {e}") from None
        return open_probe(parsed, sites, threads=threads, consume=True)
    return Probe(make_session(data, threads=threads), names, skipped)


def collect(
    model: onnx.ModelProto | bytes | str | os.PathLike[str] | Probe,
    sites: Sequence[GeluSite],
    data: Iterable[Feed],
    *,
    threads: int | None = None,
    progress: bool = False,
    total_batches: int | None = None,
    workers: int | None = None,
    channel_histograms: bool = True,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> Collected:
    """Run ``data`` through the probe model once and accumulate per-site statistics
    (``channel_histograms=False``: per-channel min/max without the per-channel histograms) and
    a uniform sample of at most ``sample_rows`` input rows per site (0: none).

    ``model`` is a model (path, loaded or bytes, see :func:`open_probe`) or an opened
    :class:`Probe`.

    The statistics of batch ``t`` are updated by ``workers`` threads (default: up to the CPU
    count, at most 4; 0 = in the calling thread) while ONNX Runtime, which releases the GIL,
    runs batch ``t + 1`` (the workers share the GIL during ``np.bincount``, their largest step).
    Each site's statistics are updated by one task at a time, in batch order; at most two
    batches of site tensors are alive at once.
    """
    probe = model if isinstance(model, Probe) else open_probe(model, sites, threads=threads)
    del model
    session, names = probe.session, probe.names
    bins = CHANNEL_BINS if channel_histograms else 0
    result = Collected(
        stats={sid: TensorStats(channel_bins=bins) for sid in names},
        skipped=dict(probe.skipped),
        samples_of={sid: RowSample(sample_rows) for sid in names} if sample_rows > 0 else {},
    )
    # one generator per site, seeded by its position: each site's rows are offered in batch
    # order by one task at a time, so the sample does not depend on thread timing
    rngs = {sid: np.random.default_rng([0x6E1C, i]) for i, sid in enumerate(names)}
    del probe
    if session is None:
        return result
    fetch: list[str] = []
    for x, lo, hi in names.values():
        fetch += [x, lo or "", hi or ""]
    fetch = list(dict.fromkeys(f for f in fetch if f))
    pos = {n: i for i, n in enumerate(fetch)}
    n_workers = _default_workers(len(names)) if workers is None else max(0, workers)
    site_ids = list(names)
    groups = [site_ids[i::n_workers] for i in range(n_workers)] if n_workers else [site_ids]
    pool = ThreadPoolExecutor(max_workers=n_workers) if n_workers else None
    pending: list[Future[None]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_batches, unit="batch", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for feed in data:
            try:
                outs = session.run(fetch, feed)
            except Exception as e:
                raise DataError(
                    f"ONNX Runtime failed on batch {result.batches}: {e}".splitlines()[0]
                ) from None
            for f in pending:  # the previous batch's updates ran while ORT worked
                f.result()
            pending = []
            for group in groups:
                st = [result.stats[sid] for sid in group]
                tensors = [outs[pos[names[sid][0]]] for sid in group]
                samples = [
                    (result.samples_of[sid], rngs[sid]) if sid in result.samples_of else None
                    for sid in group
                ]
                if pool is None:
                    _update_sites(st, tensors, samples, feed)
                else:
                    pending.append(pool.submit(_update_sites, st, tensors, samples, feed))
                del tensors
            for sid, (_, lo, hi) in names.items():
                if lo is not None and hi is not None:
                    vlo, vhi = float(outs[pos[lo]]), float(outs[pos[hi]])
                    if math.isfinite(vlo):
                        result.output_min[sid] = min(result.output_min.get(sid, math.inf), vlo)
                    if math.isfinite(vhi):
                        result.output_max[sid] = max(result.output_max.get(sid, -math.inf), vhi)
            del outs
            result.batches += 1
            result.samples += _batch_of(feed)
            if bar is not None:
                bar.update(1)
                rate = result.samples / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(samples=result.samples, samples_per_s=f"{rate:.1f}")
        for f in pending:
            f.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    if result.batches == 0:
        raise DataError("the data source gave no batches; nothing to calibrate from")
    return result
