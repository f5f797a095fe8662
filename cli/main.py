"""Entry point of the ``gelu-quant`` command.

Exit codes, for every command (``pipeline`` and ``demo`` included):

- 0 success;
- 1 the accuracy gate failed (a verdict, not an error);
- 2 bad input: a usage error, an unreadable or untrusted model, bad data, a file that cannot be
  read or written (one line on stderr saying what and what to do);
- 3 internal error: a bug in gelu-quant or a library it calls (one line naming the error and
  asking for a report; the traceback with ``--debug`` or ``GELU_QUANT_DEBUG=1``);
- 130 interrupted.

A crash therefore never reads as a gate verdict in CI.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from gelu_quant import __version__
from gelu_quant.errors import GeluQuantError

EXIT_INTERNAL = 3
# errors of the machine about files the user named; a missing input is checked by each command
# with its own message, so FileNotFoundError reaching the top is a bug (exit 3)
_USER_OS_ERRORS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR}
    | {errno.ENOTDIR, errno.ENAMETOOLONG, errno.EFBIG}
)
DEBUG_ENV = "GELU_QUANT_DEBUG"
REPORT_TO = "the gelu-quant issue tracker"


_debug_flag = False  # set by the group's --debug option before any command runs


def _debug_requested() -> bool:
    return _debug_flag or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _internal_error(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(err)
    detail = " ".join(str(err).split()) or "(no message)"
    if len(detail) > 300:
        detail = detail[:297] + "..."
    hint = "" if debug else f"; rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
    click.echo(
        f"gelu-quant: internal error: {type(err).__name__}: {detail} - this is a bug, please "
        f"report it to {REPORT_TO} with the command you ran{hint}",
        err=True,
    )


class _Group(click.Group):
    """A click group that reports every error as one line on stderr with the right exit code:
    2 for bad input (usage errors and unusable files included), 1 for a failed gate, 3 for an
    internal error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeluQuantError as e:  # one line, whatever the message holds
            click.echo(f"gelu-quant: error: {' '.join(str(e).split())}", err=True)
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
        global _debug_flag
        _debug_flag = False
        try:
            rv = run(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:  # usage errors and bad parameters: exit 2
            click.echo(f"gelu-quant: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("gelu-quant: aborted", err=True)
            sys.exit(130)
        except OSError as e:
            if e.errno not in _USER_OS_ERRORS:  # e.g. a temporary file of ours gone: a bug
                _internal_error(e, _debug_requested())
                sys.exit(EXIT_INTERNAL)
            # the machine refuses a file the user named (permissions, a full or read-only
            # disk): bad input, nothing gelu-quant can fix
            if _debug_requested():
                traceback.print_exception(e)
            where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
            click.echo(f"gelu-quant: error: cannot access{where}: {e.strerror or e}", err=True)
            sys.exit(2)
        except Exception as e:  # anything else is our bug, not a verdict: exit 3
            _internal_error(e, _debug_requested())
            sys.exit(EXIT_INTERNAL)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gelu-quant")
@click.option(
    "--debug",
    is_flag=True,
    help=f"Print the traceback of an internal error (also: {DEBUG_ENV}=1).",
)
def main(debug: bool) -> None:
    """Int8 lookup tables and fp16 polynomials for GELU in ONNX models.

    Exit codes: 0 ok, 1 accuracy gate failed, 2 bad input, 3 internal error.
    """
    global _debug_flag
    _debug_flag = debug


# -- commands: one module each; add yours here -------------------------------------------------
from gelu_quant.cli.approx_cmd import approx  # noqa: E402

main.add_command(approx)

from gelu_quant.cli.eval_cmd import eval_cmd  # noqa: E402

main.add_command(eval_cmd)

from gelu_quant.cli.inspect_cmd import inspect_cmd  # noqa: E402

main.add_command(inspect_cmd)

from gelu_quant.cli.calibrate_cmd import calibrate, merge_stats_cmd  # noqa: E402

main.add_command(calibrate)
main.add_command(merge_stats_cmd)

from gelu_quant.cli.convert_cmd import convert  # noqa: E402

main.add_command(convert)

from gelu_quant.cli.export_cmd import export_cmd  # noqa: E402

main.add_command(export_cmd)

from gelu_quant.cli.sweep_cmd import sweep_cmd  # noqa: E402

main.add_command(sweep_cmd)

from gelu_quant.cli.pipeline_cmd import demo_cmd, pipeline_cmd  # noqa: E402

main.add_command(pipeline_cmd)
main.add_command(demo_cmd)
