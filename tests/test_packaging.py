"""The built wheel holds the whole package.

The suite runs against an editable install, which maps whole source folders and so imports
sub-packages that ``pyproject.toml`` forgets to list; a wheel built from the same files would
then lack them (``gelu_quant.graph.ops`` and ``.passes`` were missing once). Oracle: the source
tree itself — every module and package-data file under the mapped folders must be in the
wheel, at its mapped path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _expected(cfg: dict) -> set[str]:
    """Wheel paths of every .py file under each mapped folder, and of the package data."""
    st = cfg["tool"]["setuptools"]
    dirs: dict[str, str] = st["package-dir"]
    out: set[str] = set()
    for pkg, folder in dirs.items():
        base = ROOT / folder
        for f in base.rglob("*.py"):
            rel = f.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            # a file in a sub-folder mapped on its own is counted under that mapping
            dotted = ".".join([pkg, *rel.parts[:-1]])
            if dotted != pkg and dotted in dirs:
                continue
            out.add("/".join([*pkg.split("."), *rel.parts]))
    for pkg, patterns in st["package-data"].items():
        owner = max((p for p in dirs if pkg == p or pkg.startswith(p + ".")), key=len)
        base = ROOT / dirs[owner] / Path(*pkg[len(owner) :].strip(".").split(".") or [""])
        for pat in patterns:
            for f in base.glob(pat):
                out.add("/".join([*pkg.split("."), *f.relative_to(base).parts]))
    return out


def test_wheel_has_every_module_and_data_file(tmp_path: Path) -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in set(cfg["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(
            ROOT / folder,
            src / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"),
            dirs_exist_ok=True,
        )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = (tmp_path / "dist").glob("gelu_quant-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    want = _expected(cfg)
    assert len(want) > 100  # the walk found the package
    assert "gelu_quant/graph/passes/site_rewrites.py" in want
    missing = sorted(want - names)
    assert not missing, f"not in the wheel: {missing[:10]}"
