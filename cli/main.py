"""Entry point of the ``gelu-quant`` command.

Exit codes: 0 success, 1 accuracy gate failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from gelu_quant import __version__
from gelu_quant.errors import GeluQuantError


class _Group(click.Group):
    """A click group that reports every error as one line on stderr with the right exit code:
    2 for bad input (usage errors included), 1 for a failed gate."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeluQuantError as e:
            click.echo(f"gelu-quant: error: {e}", err=True)
            sys.exit(e.exit_code)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = run(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:  # usage errors and bad parameters: exit 2
            click.echo(f"gelu-quant: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("gelu-quant: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gelu-quant")
def main() -> None:
    """Int8 lookup tables and fp16 polynomials for GELU in ONNX models."""


# -- commands: one module each; add yours here -------------------------------------------------
from gelu_quant.cli.approx import approx  # noqa: E402

main.add_command(approx)

from gelu_quant.cli.eval_cmd import eval_cmd  # noqa: E402

main.add_command(eval_cmd)

from gelu_quant.cli.inspect_cmd import inspect_cmd  # noqa: E402

main.add_command(inspect_cmd)

from gelu_quant.cli.calibrate import calibrate, merge_stats_cmd  # noqa: E402

main.add_command(calibrate)
main.add_command(merge_stats_cmd)

from gelu_quant.cli.convert import convert  # noqa: E402

main.add_command(convert)

from gelu_quant.cli.pipeline_cmd import demo_cmd, pipeline_cmd  # noqa: E402

main.add_command(pipeline_cmd)
main.add_command(demo_cmd)
