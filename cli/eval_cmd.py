"""``gelu-quant eval``: compare a converted model with its fp32 reference; the CI gate.

Exit codes: 0 every threshold holds, 1 the gate failed (reports are written first), 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gelu_quant.calib.data import model_input_specs, open_data_source
from gelu_quant.cli.options import text_data_options
from gelu_quant.errors import BadInputError, GateFailed
from gelu_quant.evaluate.accuracy_report import (
    text_summary,
    to_json,
    to_junit_xml,
    to_markdown,
)
from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
from gelu_quant.evaluate.gate import GateConfig, load_gate_config
from gelu_quant.fileio import write_text_atomic
from gelu_quant.graph.convert import default_manifest_path


@click.command("eval")
@click.argument("reference", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("candidate", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--data",
    "data",
    required=True,
    metavar="SOURCE",
    help="Evaluation data, the same sources as `calibrate`: an .npz, a folder of "
    "test_data_set_*/input_*.pb, module:callable, or a text file (with --tokenizer).",
)
@text_data_options
@click.option(
    "--labels",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Class labels aligned with the data's samples (.npy, .npz, or .txt one int "
    "per line): task accuracy of both models and the drop.",
)
@click.option(
    "--label-output",
    default=None,
    metavar="NAME",
    help="Classification output to score labels on (default: the only one).",
)
@click.option(
    "--classification-output",
    "classification_outputs",
    multiple=True,
    metavar="NAME",
    help="Treat this output as [batch, classes] logits (repeatable; "
    "default: every rank-2 float output).",
)
@click.option(
    "--no-classification",
    is_flag=True,
    help="Treat every output as a plain tensor (no top-1/KL), e.g. embeddings.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The candidate's conversion manifest (default: CANDIDATE's <stem>.manifest.json when "
    "it exists): per-site ranges and quantized outputs.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=None,
    metavar="PP",
    help="Largest allowed accuracy drop, in percentage points (needs --labels).",
)
@click.option(
    "--min-cosine",
    type=float,
    default=None,
    help="Smallest allowed mean per-sample cosine similarity, every output.",
)
@click.option(
    "--min-worst-cosine",
    type=float,
    default=None,
    help="Smallest allowed per-sample cosine similarity (worst sample), every output.",
)
@click.option(
    "--min-sqnr",
    type=float,
    default=None,
    metavar="DB",
    help="Smallest allowed SQNR in dB, every output.",
)
@click.option(
    "--min-top1-agreement",
    type=float,
    default=None,
    help="Smallest allowed top-1 agreement (fraction), classification outputs.",
)
@click.option(
    "--gate-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML file with a [tool.gelu-quant.gate] table; flags override it.",
)
@click.option("--report-json", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option(
    "--report-md",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Markdown summary (e.g. $GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JUnit XML, one test case per threshold and output.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write per-site plots here (needs matplotlib).",
)
@click.option("--no-sites", is_flag=True, help="Skip the per-GELU-site comparison.")
@click.option(
    "--include-padding",
    is_flag=True,
    help="Compare padded positions too (default: [batch, seq, C] outputs and GELU sites are "
    "compared on the real tokens of the data's attention_mask).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--max-batches", type=click.IntRange(min=1), default=None)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="ONNX Runtime intra-op threads (0: its default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No summary, no progress bar.")
def eval_cmd(
    reference: Path,
    candidate: Path,
    data: str,
    tokenizer: str | None,
    max_length: int | None,
    labels: Path | None,
    label_output: str | None,
    classification_outputs: tuple[str, ...],
    no_classification: bool,
    manifest: Path | None,
    max_accuracy_drop: float | None,
    min_cosine: float | None,
    min_worst_cosine: float | None,
    min_sqnr: float | None,
    min_top1_agreement: float | None,
    gate_config: Path | None,
    report_json: Path | None,
    report_md: Path | None,
    junit: Path | None,
    plots_dir: Path | None,
    no_sites: bool,
    include_padding: bool,
    batch_size: int | None,
    max_batches: int | None,
    threads: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare CANDIDATE (converted) with REFERENCE (fp32) on --data; gate on thresholds."""
    flags = GateConfig(
        max_accuracy_drop=max_accuracy_drop,
        min_cosine=min_cosine,
        min_worst_cosine=min_worst_cosine,
        min_sqnr=min_sqnr,
        min_top1_agreement=min_top1_agreement,
    )
    gate = load_gate_config(gate_config).merged(flags) if gate_config is not None else flags

    if no_classification and classification_outputs:
        raise BadInputError("--no-classification contradicts --classification-output")
    if manifest is None and default_manifest_path(candidate).is_file():
        manifest = default_manifest_path(candidate)
    inputs = {
        p.resolve() for p in (reference, candidate, labels, gate_config, manifest) if p is not None
    }
    data_path = Path(data)
    if data_path.exists():
        inputs.add(data_path.resolve())
    outs = [p for p in (report_json, report_md, junit) if p is not None]
    for p in outs:
        if p.resolve() in inputs:
            raise BadInputError(f"refusing to overwrite input file {p} with a report")
    if len({p.resolve() for p in outs}) != len(outs):
        raise BadInputError("--report-json, --report-md and --junit must be different files")
    for p in (reference, candidate):
        if not p.is_file():
            raise BadInputError(f"model {p} does not exist")

    source = open_data_source(
        data,
        model_input_specs(reference),
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
        max_length=max_length,
    )
    config = EvalConfig(
        gate=gate,
        labels=labels,
        label_output=label_output,
        classification_outputs=() if no_classification else (classification_outputs or None),
        manifest=manifest,
        compare_sites=not no_sites,
        plots_dir=plots_dir,
        max_batches=max_batches,
        threads=threads,
        progress=not quiet and sys.stderr.isatty(),
        include_padding=include_padding,
    )
    report = evaluate(reference, candidate, source, config)

    if report_json is not None:
        write_text_atomic(report_json, to_json(report), make_parents=True)
    if report_md is not None:
        write_text_atomic(
            report_md, to_markdown(report, markdown_path=report_md), make_parents=True
        )
    if junit is not None:
        write_text_atomic(junit, to_junit_xml(report), make_parents=True)
    if as_json:
        click.echo(to_json(report), nl=False)
    elif not quiet:
        click.echo(text_summary(report))
    if not report.passed:
        failed = "; ".join(c.message for c in report.verdict.failed)
        raise GateFailed(f"accuracy gate failed: {failed}")
