"""Run mypy over the package as it is installed.

setuptools maps ``lut/``, ``calib/``, ``cli/`` and ``models/`` into ``gelu_quant.*``; mypy cannot
follow that mapping in the source tree, so this stages the package with symlinks under
``build/typecheck/gelu_quant`` (the layout a wheel has) and checks that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"lut": "lut", "calib": "calib", "cli": "cli", "models": "models"}


def main() -> int:
    stage = ROOT / "build" / "typecheck"
    if stage.exists():
        shutil.rmtree(stage)
    pkg = stage / "gelu_quant"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "gelu_quant").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, pkg / entry.name)
    for sub, folder in MAPPED.items():
        os.symlink(ROOT / folder, pkg / sub)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "-p",
        "gelu_quant",
    ]
    return subprocess.call(cmd, cwd=stage)


if __name__ == "__main__":
    raise SystemExit(main())
