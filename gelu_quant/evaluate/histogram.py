"""Streaming histograms over a symmetric range that doubles when data falls outside it.

Used for the plots only: the pre-activation histogram of each GELU site and the approximation's
error curve (largest ``|error|`` per input bin). Bins cover ``[-R, R)`` with ``R`` a power of two;
when a value reaches ``R`` the range doubles and pairs of bins merge exactly, so memory stays
fixed (``bins`` numbers) whatever the data.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MAX_HALF_RANGE = 2.0**40


class AdaptiveHistogram:
    """Counts and, optionally, the largest attached value per bin (e.g. ``|error|``)."""

    def __init__(self, bins: int = 512, half_range: float = 1.0, *, track_max: bool = False):
        if bins < 4 or bins % 4:
            raise ValueError("bins must be a positive multiple of 4")
        self.bins = bins
        self.half_range = float(half_range)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.max_value: npt.NDArray[np.float64] | None = (
            np.zeros(bins, dtype=np.float64) if track_max else None
        )
        self.min_seen = np.inf
        self.max_seen = -np.inf
        self.nonfinite = 0

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        return np.linspace(-self.half_range, self.half_range, self.bins + 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _double(self) -> None:
        q = self.bins // 4
        new = np.zeros_like(self.counts)
        new[q : 3 * q] = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = new
        if self.max_value is not None:
            newm = np.zeros_like(self.max_value)
            newm[q : 3 * q] = self.max_value.reshape(-1, 2).max(axis=1)
            self.max_value = newm
        self.half_range *= 2.0

    def update(self, x: npt.ArrayLike, values: npt.ArrayLike | None = None) -> None:
        """Add the samples ``x`` (and, with ``track_max``, their attached ``values``)."""
        a = np.asarray(x, dtype=np.float64).ravel()
        v = None if values is None else np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(a)
        if v is not None:
            finite &= np.isfinite(v)
        if not finite.all():
            self.nonfinite += int(a.size - np.count_nonzero(finite))
            a = a[finite]
            v = None if v is None else v[finite]
        if a.size == 0:
            return
        lo, hi = float(a.min()), float(a.max())
        self.min_seen, self.max_seen = min(self.min_seen, lo), max(self.max_seen, hi)
        while max(-lo, hi) >= self.half_range and self.half_range < _MAX_HALF_RANGE:
            self._double()
        r = self.half_range
        idx = np.floor((a + r) * (self.bins / (2.0 * r))).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.bins)
        if self.max_value is not None:
            if v is None:
                raise ValueError("this histogram tracks a value per sample: pass values")
            np.maximum.at(self.max_value, idx, v)
