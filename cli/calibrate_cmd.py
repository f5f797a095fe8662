"""``gelu-quant calibrate`` and ``gelu-quant merge-stats``: GELU input ranges from data."""

from __future__ import annotations

import json
import sys
from typing import Any, cast

import click

from gelu_quant.calib.calibration import DEFAULT_METHOD, calibrate_model, merge_stats
from gelu_quant.calib.methods import DEFAULT_PERCENTILE, METHODS, MethodName
from gelu_quant.calib.ranges_file import MethodParams, RangesFile
from gelu_quant.calib.row_sample import DEFAULT_SAMPLE_ROWS
from gelu_quant.cli.options import text_data_options


def _method_options(f: Any) -> Any:
    f = click.option(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        show_default=True,
        help="P for --method percentile: keep [q(1-P/100), q(P/100)].",
    )(f)
    f = click.option(
        "--method",
        type=click.Choice(METHODS),
        default=DEFAULT_METHOD,
        show_default=True,
        help="Range marked as chosen (every method's range is stored).",
    )(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No summary, no progress bar.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print the ranges file to stdout.")(f)
    return f


def _summary(r: RangesFile, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=1))
        return
    if quiet:
        return
    d = r.data
    click.echo(
        f"{len(r.sites)} GELU site(s), {d['samples']} samples in {d['batches']} batches; "
        f"chosen method: {r.method}",
        err=True,
    )
    for s in r.sites:
        st = s["stats"]
        rng = s["ranges"].get(r.method)
        chosen = "n/a" if rng is None else f"[{rng['input'][0]:.4g}, {rng['input'][1]:.4g}]"
        nf = f", {st['nonfinite']} non-finite" if st["nonfinite"] else ""
        click.echo(
            f"  {s['id']}: min {st['min']:.4g} max {st['max']:.4g}{nf} -> {chosen}", err=True
        )
    for sid, why in r.skipped.items():
        click.echo(f"  {sid}: skipped ({why})", err=True)
    info = r.sample_info
    if info and info.get("file"):
        rows = info.get("rows", {})
        click.echo(
            f"row sample for the consumer correction: {info['file']} "
            f"({min(rows.values(), default=0)}-{max(rows.values(), default=0)} rows per site)",
            err=True,
        )


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--data",
    "data",
    required=True,
    help="An .npz, a folder of test_data_set_*/input_*.pb, module:callable, or a text "
    "file (with --tokenizer).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Ranges file to write (JSON).",
)
@click.option(
    "--max-batches", type=click.IntRange(min=1), default=None, help="Stop after N batches."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size for file sources (default: the model's, else 16).",
)
@text_data_options
@click.option(
    "--save-stats",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the raw statistics (.npz or .json) for merge-stats.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="ONNX Runtime intra-op threads (default: ORT's choice).",
)
@click.option(
    "--no-channel-histograms",
    is_flag=True,
    help="Keep per-channel min/max but not the per-channel histograms (channels x 512 x 8 bytes "
    "per GELU; without them grouped tables take --group-method minmax only).",
)
@click.option(
    "--sample-rows",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE_ROWS,
    show_default=True,
    help="Input rows (tokens; real tokens only for text) sampled per GELU for convert's "
    "consumer correction, written beside the ranges file as <stem>.sample.npz (float16). "
    "0: no sample, no correction.",
)
@_method_options
def calibrate(
    model: str,
    data: str,
    output: str,
    max_batches: int | None,
    batch_size: int | None,
    tokenizer: str | None,
    max_length: int | None,
    save_stats: str | None,
    threads: int | None,
    no_channel_histograms: bool,
    sample_rows: int,
    method: str,
    percentile: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Measure where MODEL's GELU inputs live on --data and write their ranges."""
    progress = not quiet and sys.stderr.isatty()
    r = calibrate_model(
        model,
        data,
        output,
        method=cast(MethodName, method),
        params=MethodParams(percentile=percentile),
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
        max_length=max_length,
        save_stats=save_stats,
        progress=progress,
        threads=threads,
        channel_histograms=not no_channel_histograms,
        sample_rows=sample_rows,
    )
    _summary(r, as_json, quiet)


@click.command("merge-stats")
@click.argument("stats", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Ranges file to write (JSON).",
)
@click.option(
    "--save-stats",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the merged raw statistics.",
)
@_method_options
def merge_stats_cmd(
    stats: tuple[str, ...],
    output: str,
    save_stats: str | None,
    method: str,
    percentile: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Combine --save-stats shards into the ranges one pass over all their data gives."""
    r = merge_stats(
        list(stats),
        output,
        method=cast(MethodName, method),
        params=MethodParams(percentile=percentile),
        save_stats=save_stats,
    )
    _summary(r, as_json, quiet)
