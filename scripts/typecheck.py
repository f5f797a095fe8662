"""Run mypy over the package as it is installed (staged by :mod:`stage_package`)."""

from __future__ import annotations

import subprocess
import sys

from stage_package import ROOT, stage


def main() -> int:
    folder = stage("typecheck")
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    return subprocess.call([*cmd, "-p", "gelu_quant"], cwd=folder)


if __name__ == "__main__":
    raise SystemExit(main())
