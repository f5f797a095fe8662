"""Entry point of the ``gelu-quant`` command.

Exit codes: 0 success, 1 accuracy gate failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from gelu_quant import __version__
from gelu_quant.errors import GeluQuantError


class _Group(click.Group):
    """A click group that turns gelu-quant errors into one line and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeluQuantError as e:
            click.echo(f"gelu-quant: error: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gelu-quant")
def main() -> None:
    """Int8 lookup tables and fp16 polynomials for GELU in ONNX models."""


# -- commands: one module each; add yours here -------------------------------------------------
from gelu_quant.cli.approx import approx  # noqa: E402

main.add_command(approx)
