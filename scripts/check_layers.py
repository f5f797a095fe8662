"""Check the import-layering contracts of ``pyproject.toml`` (``[tool.importlinter]``) with
import-linter, on the package as it is installed (staged by :mod:`stage_package`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stage_package import ROOT, stage


def main() -> int:
    folder = stage("layers")
    env = dict(os.environ, PYTHONPATH=str(folder))  # the staged package, not the editable one
    lint = Path(sys.executable).parent / "lint-imports"
    cmd = [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"]
    return subprocess.call(cmd, cwd=folder, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
