"""Stage the package in the layout a wheel has, for tools that read the source tree.

setuptools maps ``lut/``, ``calib/``, ``cli/`` and ``models/`` into ``gelu_quant.*``; mypy and
import-linter cannot follow that mapping, so :func:`stage` builds
``build/<name>/gelu_quant`` from symlinks (``gelu_quant/*`` plus the mapped folders).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"lut": "lut", "calib": "calib", "cli": "cli", "models": "models"}


def stage(name: str) -> Path:
    """``build/<name>`` holding ``gelu_quant`` as installed; returns that folder."""
    folder = ROOT / "build" / name
    if folder.exists():
        shutil.rmtree(folder)
    pkg = folder / "gelu_quant"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "gelu_quant").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, pkg / entry.name)
    for sub, src in MAPPED.items():
        os.symlink(ROOT / src, pkg / sub)
    return folder
