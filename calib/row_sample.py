"""A bounded uniform sample of one site's input rows (the last-axis vectors of its tokens).

The consumer correction (:mod:`gelu_quant.graph.consumer_fit`) fits the layer after a table to
the table's error, which needs whole rows of pre-activations, not histograms. A pass keeps at
most ``capacity`` rows per site, memory flat in the amount of data:

* every row gets a random priority key, uniform in [0, 1), from a generator seeded once per
  pass; the sample is the ``capacity`` rows with the smallest keys, so it is a uniform sample
  without replacement of every row seen;
* merging two samples keeps the smallest keys of their union: the same rows in any merge
  order (ties are impossible in practice; they break by row content order);
* rows are written as float16 (the fit needs the tables' codes of the rows, which float16
  moves only at code boundaries; see the fit's tolerance); in memory they stay float32, since
  converting each batch to float16 cost more than everything else the sample does;
* text models: only real tokens (``attention_mask`` = 1) are sampled, never padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_SAMPLE_ROWS = 8192
"""Rows kept per site by default (MiniLM: 8192 × 1536 values, 50 MB per site in memory as
float32, 25 MB written as float16)."""


class RowSample:
    """At most ``capacity`` rows of one site's input, a uniform sample of every row seen.

    Rows live in a preallocated buffer; once it is full, a batch's accepted rows overwrite the
    rows whose keys they beat, so a batch costs its accepted rows, not a copy of the sample.
    :attr:`rows` / :attr:`keys` are ordered by key (the same arrays whatever the merge order).
    """

    def __init__(
        self,
        capacity: int,
        rows: npt.NDArray[np.float16] | None = None,
        keys: npt.NDArray[np.float64] | None = None,
        seen: int = 0,
    ) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.seen = seen
        """Rows offered so far (the sample's population)."""
        self._buf: npt.NDArray[np.float32] | None = None
        self._keys = np.zeros(0)
        if rows is not None and keys is not None and keys.size:
            self._offer(np.asarray(rows, np.float16), np.asarray(keys, np.float64))

    @property
    def rows(self) -> npt.NDArray[np.float16]:
        if self._buf is None:
            return np.zeros((0, 0), np.float16)
        order = np.argsort(self._keys, kind="stable")
        return self._buf[: self._keys.size][order].astype(np.float16)

    @property
    def keys(self) -> npt.NDArray[np.float64]:
        return np.sort(self._keys, kind="stable")

    def _offer(self, rows: npt.NDArray[Any], keys: npt.NDArray[np.float64]) -> None:
        if self._buf is None:
            self._buf = np.empty((self.capacity, rows.shape[1]), np.float32)
        elif rows.shape[1] != self._buf.shape[1]:
            raise ValueError(
                f"rows of width {rows.shape[1]} offered to a sample of width {self._buf.shape[1]}"
            )
        n = self._keys.size
        free = self.capacity - n
        if free > 0:  # fill the free slots first
            take = min(free, keys.size)
            self._buf[n : n + take] = rows[:take]
            self._keys = np.concatenate([self._keys, keys[:take]])
            rows, keys = rows[take:], keys[take:]
        if not keys.size:
            return
        # full: keep the `capacity` smallest of (held keys, new keys); new winners overwrite
        # the held losers' slots
        both = np.concatenate([self._keys, keys])
        keep = np.zeros(both.size, bool)
        keep[np.argpartition(both, self.capacity - 1)[: self.capacity]] = True
        losers = np.flatnonzero(~keep[: self.capacity])
        winners = np.flatnonzero(keep[self.capacity :])
        self._buf[losers] = rows[winners]
        self._keys[losers] = keys[winners]

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
        if self._keys.size >= self.capacity:  # only rows that beat the current largest key
            take = keys < float(self._keys.max())
            flat, keys = flat[take], keys[take]
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            flat, keys = flat[finite], keys[finite]
        if keys.size:
            self._offer(flat, keys)

    def merge(self, other: RowSample) -> None:
        """The sample of both populations (the smallest keys of the union)."""
        self.seen += other.seen
        if other._keys.size:
            self._offer(other.rows, other.keys)

    def copy(self) -> RowSample:
        return RowSample(self.capacity, self.rows, self.keys, self.seen)

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
