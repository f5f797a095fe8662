"""``gelu-quant sweep``: every target and range method measured on the same data; the front."""

from __future__ import annotations

from pathlib import Path

import click

from gelu_quant.calib.data import model_input_specs, open_data_source
from gelu_quant.cli.options import text_data_options
from gelu_quant.errors import BadInputError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("sweep")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--ranges",
    "ranges_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Ranges file from `gelu-quant calibrate` on CALIBRATION data (it holds every method).",
)
@click.option(
    "--data",
    required=True,
    metavar="SOURCE",
    help="EVALUATION data (never the calibration data), the same sources as `eval`.",
)
@text_data_options
@click.option(
    "--targets",
    default=None,
    metavar="T1,T2,…",
    help="Targets to measure (default: the 8-bit tables, fp16-out, PWL, int6 and polynomials).",
)
@click.option(
    "--methods",
    default=None,
    metavar="M1,M2,…",
    help="Range methods for range-built targets (default: every method in the ranges file).",
)
@click.option(
    "--groups",
    default="1,8",
    show_default=True,
    metavar="K1,K2,…",
    help="Tables per site to try on 8-bit table targets.",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Class labels for the data: accuracy drop per configuration.",
)
@click.option("--no-classification", is_flag=True, help="Treat every output as a plain tensor.")
@click.option(
    "--score-output",
    "score_outputs",
    multiple=True,
    metavar="NAME",
    help="Output(s) the error is scored on (repeatable; default: the worst of all outputs).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for sweep.json, sweep.md, sweep.csv and sweep.png.",
)
@click.option("--keep-models", is_flag=True, help="Keep the converted models in OUTPUT/models.")
@click.option(
    "--latency-rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Interleaved timing rounds per configuration (best of).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="ORT threads."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--max-batches", type=click.IntRange(min=1), default=None)
@click.option("--force", is_flag=True, help="Use a ranges file made for another model.")
@click.option("--json", "as_json", is_flag=True, help="Print sweep.json on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def sweep_cmd(
    model: Path,
    ranges_path: Path,
    data: str,
    tokenizer: str | None,
    max_length: int | None,
    targets: str | None,
    methods: str | None,
    groups: str,
    labels: Path | None,
    no_classification: bool,
    score_outputs: tuple[str, ...],
    output: Path,
    keep_models: bool,
    latency_rounds: int,
    threads: int,
    batch_size: int | None,
    max_batches: int | None,
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Convert MODEL with every target x method x table count, evaluate each against fp32 on
    --data, time it, and write the accuracy-vs-cost table with its Pareto front."""
    from gelu_quant.calib.ranges_file import load_ranges
    from gelu_quant.fileio import write_text_atomic
    from gelu_quant.sweep import (
        DEFAULT_TARGETS,
        run_sweep,
        sweep_points,
        to_csv,
        to_json,
        to_markdown,
        write_plot,
    )

    for p, what in ((model, "model"), (ranges_path, "ranges file")):
        if not p.is_file():
            raise BadInputError(f"{what} {p} does not exist")
    try:
        ks = [int(k) for k in _csv(groups)]
    except ValueError:
        raise BadInputError(
            f"--groups takes integers separated by commas, got {groups!r}"
        ) from None
    if score_outputs:
        import onnx

        have = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
        unknown = [o for o in score_outputs if o not in have]
        if unknown:
            raise BadInputError(
                f"no output named {', '.join(unknown)}; the model has {', '.join(have)}"
            )
    ranges = load_ranges(ranges_path)
    file_methods = sorted({m for s in ranges.sites for m in s["ranges"]})
    ms = _csv(methods) if methods else file_methods
    missing = [m for m in ms if m not in file_methods]
    if missing:
        raise BadInputError(
            f"the ranges file has no {', '.join(missing)} ranges; it has {', '.join(file_methods)}"
        )
    points = sweep_points(_csv(targets) if targets else list(DEFAULT_TARGETS), ms, ks)
    source = open_data_source(
        data,
        model_input_specs(model),
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
        max_length=max_length,
    )
    output.mkdir(parents=True, exist_ok=True)
    log = None if quiet else (lambda m: click.echo(m, err=True))
    rows = run_sweep(
        model,
        ranges_path,
        source,
        points,
        labels=labels,
        classification_outputs=() if no_classification else None,
        latency_rounds=latency_rounds,
        threads=threads,
        keep_models=output / "models" if keep_models else None,
        force=force,
        score_outputs=score_outputs or None,
        log=log,
    )
    meta = {
        "model": str(model),
        "ranges": str(ranges_path),
        "data": str(data),
        "threads": threads,
        "score_outputs": list(score_outputs) or "all",
        "latency_rounds": latency_rounds,
    }
    doc = to_json(rows, meta)
    write_text_atomic(output / "sweep.json", doc)
    write_text_atomic(output / "sweep.csv", to_csv(rows))
    write_text_atomic(output / "sweep.md", to_markdown(rows))
    plotted = write_plot(rows, output / "sweep.png")
    if as_json:
        click.echo(doc, nl=False)
    elif not quiet:
        click.echo(to_markdown(rows), nl=False)
        click.echo(
            f"files in {output}/: sweep.json sweep.md sweep.csv" + (" sweep.png" if plotted else "")
        )
    if all(r.failed is not None for r in rows):
        raise BadInputError("every configuration failed; see sweep.json for the reasons")
