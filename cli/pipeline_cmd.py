"""``gelu-quant pipeline`` and ``gelu-quant demo``: the whole loop in one command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gelu_quant.errors import GateFailed
from gelu_quant.evaluate.accuracy_report import text_summary
from gelu_quant.pipeline import PipelineResult, stderr_log


def _finish(result: PipelineResult, quiet: bool) -> None:
    if not quiet:
        click.echo(text_summary(result.report))
        click.echo("")
        click.echo(f"files in {result.output}/:")
        for key, path in sorted(result.files.items()):
            click.echo(f"  {key:<12} {path}")
        t = result.timings
        click.echo("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items()))
    if not result.passed:
        failed = "; ".join(c.message for c in result.report.verdict.failed)
        raise GateFailed(f"accuracy gate failed: {failed}")


@click.command("pipeline")
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder (overrides the config's 'output').",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress, no summary.")
def pipeline_cmd(config: Path, output: Path | None, quiet: bool) -> None:
    """Calibrate -> convert -> eval -> export from one TOML CONFIG; exit 1 if the gate fails."""
    from gelu_quant.pipeline import PipelineConfig, run_pipeline, with_output

    cfg = with_output(PipelineConfig.from_toml(config), output)
    progress = not quiet and sys.stderr.isatty()
    _finish(run_pipeline(cfg, progress=progress, log=stderr_log(quiet)), quiet)


@click.command("demo")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("gelu-quant-demo"),
    show_default=True,
    help="Folder for the model, ranges, manifest, reports and plots.",
)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--evaluation-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--target", default="int8-lut", show_default=True, help="Any `convert --target`.")
@click.option(
    "--min-cosine",
    type=float,
    default=0.99,
    show_default=True,
    help="Gate: mean cosine of sentence embeddings against fp32.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress, no summary.")
def demo_cmd(
    output: Path,
    calibration_samples: int,
    evaluation_samples: int,
    target: str,
    min_cosine: float,
    quiet: bool,
) -> None:
    """Run the whole loop on all-MiniLM-L6-v2 with the built-in text corpus."""
    from gelu_quant.demo import run_demo

    result = run_demo(
        output,
        calibration_samples=calibration_samples,
        evaluation_samples=evaluation_samples,
        target=target,
        min_cosine=min_cosine,
        progress=not quiet and sys.stderr.isatty(),
        log=stderr_log(quiet),
    )
    _finish(result, quiet)
