"""The two library calls behind ``gelu-quant calibrate`` and ``gelu-quant merge-stats``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx

from gelu_quant.calib.collector import collect, open_probe
from gelu_quant.calib.data import model_input_specs, open_data_source
from gelu_quant.calib.methods import DEFAULT_METHOD, MethodName
from gelu_quant.calib.ranges_file import (
    MethodParams,
    RangesFile,
    StatsFile,
    refuse_overwriting_inputs,
)
from gelu_quant.calib.row_sample import DEFAULT_SAMPLE_ROWS
from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.fingerprint import model_fingerprint
from gelu_quant.graph.sites import GeluSite
from gelu_quant.modelfile import read_model_bytes, uses_external_data


def _discovery() -> Callable[[onnx.ModelProto | str | os.PathLike[str]], list[GeluSite]]:
    # imported on first use: onnx-ir (and the sympy it imports) take ~0.5 s to import
    from gelu_quant.graph.discover import find_gelu_sites

    return find_gelu_sites


def collect_stats(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str] | object,
    *,
    sites: Sequence[GeluSite] | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    max_length: int | None = None,
    progress: bool = False,
    threads: int | None = None,
    workers: int | None = None,
    channel_histograms: bool = True,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> StatsFile:
    """One streaming pass of ``data`` through ``model``: the raw per-site statistics."""
    path = Path(os.fspath(model))
    with ThreadPoolExecutor(max_workers=2) as pool:
        # the discovery code imports while the model file is read and parsed
        importing = pool.submit(_discovery) if sites is None else None
        raw, proto = read_model_bytes(path)  # external data checked before anything reads it
        external = uses_external_data(proto)
        # the fingerprint (mostly hashing the weights, outside the GIL) runs beside discovery
        fingerprinting = pool.submit(model_fingerprint, proto, path.resolve().parent)
        # discovery reads small constants: from the path when they live in external files
        if importing is not None:
            found = importing.result()(path if external else proto)
        else:
            found = list(sites or ())
        fingerprint = fingerprinting.result()
    if not found:
        raise ModelError(
            f"{path}: no GELU found; nothing to calibrate (gelu-quant inspect shows near misses)"
        )
    specs = model_input_specs(proto)
    source = open_data_source(
        data,
        specs,
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
        max_length=max_length,
    )
    total = getattr(source, "num_batches", None)
    if external:  # this copy of the model becomes the probe (the file is read once)
        del raw
        probe = open_probe(
            proto, found, threads=threads, base_dir=path.resolve().parent, consume=True
        )
    else:  # the probe is spliced from the file's bytes (no copy of the weights via protobuf)
        del proto
        probe = open_probe(raw, found, threads=threads)
        del raw
    c = collect(
        probe,
        found,
        source,
        threads=threads,
        progress=progress,
        total_batches=total,
        workers=workers,
        channel_histograms=channel_histograms,
        sample_rows=sample_rows,
    )
    return StatsFile(
        model_name=path.name,
        fingerprint=fingerprint,
        sites=found,
        collected=c,
        sources=[source.describe()],
    )


def calibrate_model(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str] | object,
    output: str | os.PathLike[str] | None = None,
    *,
    method: MethodName = DEFAULT_METHOD,
    params: MethodParams | None = None,
    sites: Sequence[GeluSite] | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    max_length: int | None = None,
    save_stats: str | os.PathLike[str] | None = None,
    progress: bool = False,
    threads: int | None = None,
    channel_histograms: bool = True,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> RangesFile:
    """Calibrate ``model`` on ``data``: write ``output`` (and ``save_stats``) if given;
    ``channel_histograms=False`` leaves out the per-channel histograms (grouped tables then take
    ``minmax`` group ranges only); ``sample_rows``: input rows sampled per site for the
    consumer correction (0: none; the ranges file then has no sample beside it)."""
    for out in (output, save_stats):
        if out is not None:
            refuse_overwriting_inputs(out, model, data, tokenizer)
    sf = collect_stats(
        model,
        data,
        sites=sites,
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
        max_length=max_length,
        progress=progress,
        threads=threads,
        channel_histograms=channel_histograms,
        sample_rows=sample_rows,
    )
    if save_stats is not None:
        sf.save(save_stats)
    ranges = sf.to_ranges(method, params or MethodParams())
    if output is not None:
        ranges.save(output)
    return ranges


def merge_stats(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    method: MethodName = DEFAULT_METHOD,
    params: MethodParams | None = None,
    save_stats: str | os.PathLike[str] | None = None,
) -> RangesFile:
    """Combine statistics shards into the ranges one pass over all their data gives."""
    if not paths:
        raise BadInputError("merge-stats needs at least one statistics file")
    for out in (output, save_stats):
        if out is not None:
            refuse_overwriting_inputs(out, *paths)
    merged = StatsFile.load(paths[0])
    for p in paths[1:]:
        merged.merge(StatsFile.load(p), str(p))
    if save_stats is not None:
        merged.save(save_stats)
    ranges = merged.to_ranges(method, params or MethodParams())
    if output is not None:
        ranges.save(output)
    return ranges
