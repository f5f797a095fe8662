"""Task labels for accuracy: one integer class per sample, in the data source's sample order.

Formats: ``.npy`` (a 1-D integer array), ``.npz`` (the array named ``labels``, or the only
array), ``.txt`` / other text (one integer per line; blank lines and ``#`` comments ignored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import BadInputError


def _as_labels(a: np.ndarray, path: Path) -> npt.NDArray[np.int64]:
    a = np.asarray(a)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise BadInputError(f"labels in {path} must be 1-D (one class per sample), got {a.shape}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise BadInputError(f"labels in {path} must be integers, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise BadInputError(f"labels in {path} must be class indices >= 0, found {a.min()}")
    return a.astype(np.int64)


def load_labels(path: Path) -> npt.NDArray[np.int64]:
    """Read labels from ``path`` (see the module doc for formats)."""
    if not path.is_file():
        raise BadInputError(f"labels file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _as_labels(np.load(path, allow_pickle=False), path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if "labels" in names:
                    return _as_labels(z["labels"], path)
                if len(names) == 1:
                    return _as_labels(z[names[0]], path)
                raise BadInputError(
                    f"{path} holds arrays {', '.join(names)}; name the labels array 'labels'"
                )
        values: list[int] = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                values.append(int(text))
            except ValueError:
                raise BadInputError(
                    f"{path}:{i}: expected one integer label per line, got {text!r}"
                ) from None
        return _as_labels(np.array(values, dtype=np.int64), path)
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read labels from {path}: {e}") from None
