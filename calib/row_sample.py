"""A bounded uniform sample of one site's input rows (the last-axis vectors of its tokens).

The consumer correction (:mod:`gelu_quant.graph.consumer_fit`) fits the layer after a table to
the table's error, which needs whole rows of pre-activations, not histograms. A pass keeps at
most ``capacity`` rows per site, memory flat in the amount of data:

* every row gets a random priority key, uniform in [0, 1), from a generator seeded once per
  pass; the sample is the ``capacity`` rows with the smallest keys, so it is a uniform sample
  without replacement of every row seen;
* merging two samples keeps the smallest keys of their union: the same rows in any merge
  order (ties are impossible in practice; they break by row content order);
* rows are stored as float16 (the fit needs the tables' codes of the rows, which float16
  moves only at code boundaries; see the fit's tolerance);
* text models: only real tokens (``attention_mask`` = 1) are sampled, never padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant.token_mask import token_mask

__all__ = ["DEFAULT_SAMPLE_ROWS", "RowSample", "token_mask"]

DEFAULT_SAMPLE_ROWS = 8192
"""Rows kept per site by default (MiniLM: 8192 × 1536 float16 = 25 MB per site)."""


@dataclass
class RowSample:
    """At most ``capacity`` rows of one site's input, a uniform sample of every row seen."""

    capacity: int
    rows: npt.NDArray[np.float16] = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    keys: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    seen: int = 0
    """Rows offered so far (the sample's population)."""

    def __post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError("capacity must be >= 0")

    def _keep(self, rows: npt.NDArray[np.float16], keys: npt.NDArray[np.float64]) -> None:
        if self.rows.size and rows.shape[1] != self.rows.shape[1]:
            raise ValueError(
                f"rows of width {rows.shape[1]} offered to a sample of width {self.rows.shape[1]}"
            )
        if self.rows.shape[0]:
            rows = np.concatenate([self.rows, rows])
            keys = np.concatenate([self.keys, keys])
        if keys.size > self.capacity:
            idx = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            idx = idx[np.argsort(keys[idx], kind="stable")]
            rows, keys = rows[idx], keys[idx]
        self.rows, self.keys = np.ascontiguousarray(rows), keys

    def update(
        self,
        x: npt.NDArray[Any],
        rng: np.random.Generator,
        row_mask: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Offer every row of ``x`` (shape ``[..., C]``; ``row_mask``: shape ``x.shape[:-1]``,
        the rows to offer). Rows with a non-finite value are not sampled."""
        if self.capacity == 0 or x.ndim == 0:
            return
        flat = x.reshape(-1, x.shape[-1])
        if row_mask is not None:
            flat = flat[np.asarray(row_mask, bool).reshape(-1)]
        self.seen += flat.shape[0]
        keys = rng.random(flat.shape[0])
        if self.keys.size >= self.capacity:  # only rows that beat the current largest key
            worst = float(self.keys.max())
            take = keys < worst
            flat, keys = flat[take], keys[take]
        finite = np.isfinite(flat).all(axis=1)
        flat, keys = flat[finite], keys[finite]
        if keys.size:
            self._keep(flat.astype(np.float16), keys)

    def merge(self, other: RowSample) -> None:
        """The sample of both populations (the smallest keys of the union)."""
        self.seen += other.seen
        if other.keys.size:
            self._keep(other.rows, other.keys)

    def copy(self) -> RowSample:
        return RowSample(self.capacity, self.rows.copy(), self.keys.copy(), self.seen)

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        return {
            f"{prefix}rows": self.rows,
            f"{prefix}keys": self.keys,
            f"{prefix}meta": np.array([self.capacity, self.seen], np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]], prefix: str) -> RowSample | None:
        if f"{prefix}rows" not in arrays:
            return None
        capacity, seen = (int(v) for v in arrays[f"{prefix}meta"])
        return cls(
            capacity,
            np.asarray(arrays[f"{prefix}rows"], np.float16),
            np.asarray(arrays[f"{prefix}keys"], np.float64),
            seen,
        )
