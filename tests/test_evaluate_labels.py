"""Labels files: .npy, .npz, .txt; and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gelu_quant.errors import BadInputError
from gelu_quant.evaluate.labels import load_labels

WANT = [3, 0, 2, 2, 1]


def test_formats(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.array(WANT, dtype=np.int32))
    np.savez(tmp_path / "b.npz", labels=np.array(WANT), x=np.zeros((5, 2)))
    np.savez(tmp_path / "c.npz", only=np.array(WANT, dtype=np.float64).reshape(5, 1))
    (tmp_path / "d.txt").write_text("# class per line\n3\n0\n\n2\n2  # dup\n1\n")
    for name in ("a.npy", "b.npz", "c.npz", "d.txt"):
        got = load_labels(tmp_path / name)
        assert got.dtype == np.int64 and got.tolist() == WANT, name


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        ("m.npz", lambda p: np.savez(p, a=np.zeros(2), b=np.zeros(2)), "name the labels array"),
        ("f.npy", lambda p: np.save(p, np.array([0.5, 1.0])), "must be integers"),
        ("n.npy", lambda p: np.save(p, np.array([1, -1])), ">= 0"),
        ("2d.npy", lambda p: np.save(p, np.zeros((2, 3), dtype=int)), "must be 1-D"),
        ("t.txt", lambda p: Path(p).write_text("1\ncat\n"), r"t.txt:2: expected one integer"),
    ],
)
def test_refused(tmp_path: Path, name: str, make, match: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path / name)
    with pytest.raises(BadInputError, match=match):
        load_labels(tmp_path / name)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_labels(tmp_path / "none.txt")
