"""Atomic file writes: a temporary file in the destination folder, then ``os.replace``.

A failure (or a kill) at any point leaves either the old file or the new one, never a half-written
file, and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gelu_quant.errors import BadInputError


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, make_parents: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically; the folder must exist unless ``make_parents``."""
    p = Path(os.fspath(path))
    folder = p.resolve().parent
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise BadInputError(f"output folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_text_atomic(
    path: str | os.PathLike[str], text: str, *, make_parents: bool = False
) -> Path:
    """Write ``text`` as UTF-8 (``\\n`` line ends) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), make_parents=make_parents)
