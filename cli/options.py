"""Click options shared by the commands that read a data source (``calibrate``, ``eval``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def text_data_options(f: F) -> F:
    """``--tokenizer DIR`` and ``--max-length N``, for text-file data sources."""
    f = click.option(
        "--max-length",
        type=click.IntRange(min=1),
        default=None,
        help="Token sequence length for text data (default: the model's, else 128).",
    )(f)
    f = click.option(
        "--tokenizer",
        type=click.Path(file_okay=False),
        default=None,
        help="Hugging Face tokenizer folder (tokenizer.json) for text data.",
    )(f)
    return f
