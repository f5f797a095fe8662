"""What an observer accumulates for one tensor: :class:`TensorStats`.

The histogram is exact and mergeable because its bins sit on a grid anchored at 0 whose width is
a power of two, ``w = 2**k``: bin ``g`` holds the values in ``[g*w, (g+1)*w)``. Computing a bin
index is exact arithmetic (scaling by a power of two, then ``floor``), and doubling the width maps
bin ``g`` to bin ``g >> 1`` exactly. The state is canonical: after any sequence of updates and
merges, ``k`` is the smallest exponent (``>= K_MIN``) for which the finite values' span
``[min, max]`` fits in :data:`NUM_BINS` bins and ``|value| / w < 2**24`` (so float32 arithmetic
stays exact), and the window starts at the bin of the minimum. So the histogram, like the
count, minimum and maximum, depends only on the multiset of values seen: a merge of shards
equals one pass over all the data, bit for bit, in any order.

With 4096 bins and the smallest fitting width, the finite range always covers more than 2048
bins (unless all values sit within ``2**-16`` of each other or very far from 0).

Non-finite values (NaN, ±inf) are counted in ``nonfinite`` and excluded from everything else.

The per-value loops of :meth:`TensorStats.update` run in a small C extension,
``gelu_quant.calib._statskernel`` (built at install when a C compiler is present): one pass for
the per-channel extremes, one for the histogram, both outside the GIL. Without it the same
arithmetic runs in numpy, giving the same statistics bit for bit, about twice as slowly
(:func:`backend` says which one is in use; ``GELU_QUANT_STATS_BACKEND=numpy`` in the
environment selects numpy even when the kernel is built).
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant.calib import channel_hist as chist
from gelu_quant.calib.grid import K_MIN, NUM_BINS, width_exponent
from gelu_quant.errors import BadInputError
from gelu_quant.fileio import write_bytes_atomic

try:
    from gelu_quant.calib import _statskernel as _kernel
except ImportError:  # not built (no C compiler at install time): numpy does the same work
    _kernel = None  # type: ignore[assignment]
if os.environ.get("GELU_QUANT_STATS_BACKEND") == "numpy":  # to compare, or to rule it out
    _kernel = None  # type: ignore[assignment]

#: Values binned per step (fits the L2 cache with its index buffer).
BLOCK = 1 << 16

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def backend() -> str:
    """``"compiled"`` when the C statistics kernel is in use, else ``"numpy"``."""
    return "compiled" if _kernel is not None else "numpy"


@dataclass
class TensorStats:
    """Streaming statistics of one tensor: count, min, max, non-finite count, an exact mergeable
    histogram and, per channel of the last axis, min/max and a histogram.

    ``update`` and ``merge`` only accumulate; choosing a range from the statistics is the job of
    the pure functions in :mod:`gelu_quant.calib.methods`.
    """

    num_bins: int = NUM_BINS
    count: int = 0
    """Number of finite values seen."""
    nonfinite: int = 0
    """Number of NaN / ±inf values seen (excluded from everything else)."""
    min: float = math.inf
    max: float = -math.inf
    k: int = K_MIN
    """Bin width is ``2**k``."""
    offset: int = 0
    """Global index of ``counts[0]``: it covers ``[offset*w, (offset+1)*w)``."""
    counts: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    channel_min: FloatArray | None = None
    """Per-channel minimum over the last axis (finite values only; +inf if none)."""
    channel_max: FloatArray | None = None
    channel_mismatch: bool = False
    """True once batches with different last-axis sizes were seen (per-channel data dropped)."""
    channel_bins: int = chist.CHANNEL_BINS
    """Bins of each channel's histogram; 0 keeps per-channel min/max only (less memory and time:
    grouped tables then take only ``minmax`` group ranges)."""
    channel_hist: IntArray | None = None
    """Per-channel histograms ``[channels, CHANNEL_BINS]`` on each channel's own grid
    (:mod:`gelu_quant.calib.channel_hist`; the grid follows from ``channel_min``/``channel_max``);
    None without per-channel statistics or when read from a file written before they existed."""

    def __post_init__(self) -> None:
        if self.counts.size == 0:
            self.counts = np.zeros(self.num_bins, dtype=np.int64)

    # -- facts -------------------------------------------------------------------------------
    @property
    def bin_width(self) -> float:
        return math.ldexp(1.0, self.k)

    @property
    def total(self) -> int:
        """All values seen, finite or not."""
        return self.count + self.nonfinite

    def edges(self) -> FloatArray:
        """The ``num_bins + 1`` bin edges (float64, exact)."""
        return np.ldexp(
            np.arange(self.offset, self.offset + self.num_bins + 1, dtype=np.float64), self.k
        )

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the finite values, as numpy's default ("linear")
        definition: the values of ranks ``floor(r)`` and ``floor(r) + 1`` (``r = q (count-1)``)
        are each placed inside their bin (spread uniformly over it) and interpolated; the result
        is clamped to ``[min, max]``. Within one bin width of ``np.quantile`` of the data."""
        if self.count == 0:
            raise BadInputError("no finite values observed: cannot take a quantile")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} outside [0, 1]")
        cum = np.cumsum(self.counts)
        rank = q * (self.count - 1)  # 0-based, as numpy's default "linear" method
        lo_rank = math.floor(rank)
        frac = rank - lo_rank
        v = self._value_of_rank(cum, lo_rank)
        if frac > 0.0:
            v = (1.0 - frac) * v + frac * self._value_of_rank(cum, lo_rank + 1)
        return float(min(max(v, self.min), self.max))

    def _value_of_rank(self, cum: IntArray, j: int) -> float:
        """A point in the bin holding the value of rank ``j`` (spread uniformly in the bin)."""
        i = min(int(np.searchsorted(cum, j, side="right")), self.num_bins - 1)
        before = int(cum[i - 1]) if i > 0 else 0
        inside = int(self.counts[i])
        pos = (j - before + 0.5) / inside if inside else 0.5
        v = (self.offset + i + min(max(pos, 0.0), 1.0)) * self.bin_width
        return float(min(max(v, self.min), self.max))

    # -- accumulation ------------------------------------------------------------------------
    def update(self, batch: npt.ArrayLike) -> None:
        """Add every value of ``batch`` (any shape; float16/32/64)."""
        x = np.asarray(batch)
        if x.dtype == np.float16 or x.dtype.kind != "f":
            x = x.astype(np.float32)
        if x.size == 0:
            return
        if _kernel is not None and x.dtype in (np.float32, np.float64):
            self._update_compiled(x)
            return
        extremes = self._update_channels(x)
        if extremes is None:
            lo, hi = float(x.min()), float(x.max())
        else:
            lo, hi = extremes
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self._grow(min(self.min, lo), max(self.max, hi))
        self.counts += self._bin(x)
        self.count += int(x.size)

    def _update_compiled(self, x: npt.NDArray[np.floating]) -> None:
        """:meth:`update` with the C kernel (``x`` float32 or float64)."""
        assert _kernel is not None
        is_double = x.dtype == np.float64
        c = self._channel_count(x)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        # without per-channel statistics, lanes keep the kernel's extremes loop vectorised
        width = c or math.gcd(int(x.size), 256)
        cmin, cmax = np.empty(width), np.empty(width)
        nonfinite = _kernel.channel_extremes(x, is_double, width, cmin, cmax)
        if c:
            grids = self._fold_channels(cmin, cmax)
            if self.channel_hist is not None and grids is not None:
                self._bin_channels_compiled(x, is_double, c, grids)
        self.nonfinite += nonfinite
        finite = int(x.size) - nonfinite
        if finite == 0:
            return
        self._grow(min(self.min, float(cmin.min())), max(self.max, float(cmax.max())))
        if not (self.counts.flags.c_contiguous and self.counts.flags.writeable):
            self.counts = np.ascontiguousarray(self.counts, dtype=np.int64).copy()
        scale = math.ldexp(1.0, -self.k)
        outside = _kernel.histogram(x, is_double, scale, self.offset, self.counts)
        if outside:
            raise AssertionError(f"{outside} values fell outside the histogram window")
        self.count += finite

    def _bin_channels_compiled(
        self,
        x: npt.NDArray[np.floating],
        is_double: bool,
        c: int,
        grids: tuple[IntArray, IntArray],
    ) -> None:
        assert _kernel is not None and self.channel_hist is not None
        k, off = grids
        scales = np.ldexp(1.0, -k)
        outside = _kernel.channel_histograms(x, is_double, c, scales, off, self.channel_hist)
        if outside:
            raise AssertionError(f"{outside} values fell outside their channel's window")

    def merge(self, other: TensorStats) -> None:
        """Add everything ``other`` has seen (``other`` is left unchanged)."""
        if other.num_bins != self.num_bins:
            raise BadInputError(
                f"cannot merge statistics with {other.num_bins} and {self.num_bins} bins"
            )
        self.nonfinite += other.nonfinite
        self._merge_channels(other)
        if other.count == 0:
            return
        self._grow(min(self.min, other.min), max(self.max, other.max))
        self.counts += _rebin(other.counts, other.k, other.offset, self.k, self.offset)
        self.count += other.count

    def copy(self) -> TensorStats:
        return TensorStats(
            num_bins=self.num_bins,
            count=self.count,
            nonfinite=self.nonfinite,
            min=self.min,
            max=self.max,
            k=self.k,
            offset=self.offset,
            counts=self.counts.copy(),
            channel_min=None if self.channel_min is None else self.channel_min.copy(),
            channel_max=None if self.channel_max is None else self.channel_max.copy(),
            channel_mismatch=self.channel_mismatch,
            channel_bins=self.channel_bins,
            channel_hist=None if self.channel_hist is None else self.channel_hist.copy(),
        )

    # -- internals ---------------------------------------------------------------------------
    def _grow(self, lo: float, hi: float) -> None:
        """Make the window canonical for the finite range ``[lo, hi]`` (re-binning exactly)."""
        k = width_exponent(lo, hi, self.num_bins)
        off = math.floor(math.ldexp(lo, -k))
        if self.count and (k != self.k or off != self.offset):
            self.counts = _rebin(self.counts, self.k, self.offset, k, off)
        elif not self.count:
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.k, self.offset, self.min, self.max = k, off, lo, hi

    def _bin(self, x: npt.NDArray[np.floating]) -> IntArray:
        """Counts of the finite values ``x`` on the current grid (all of them fall inside)."""
        # x * 2**-k is exact (power-of-two scaling, |result| < 2**24); floor is exact; the
        # subtraction of two integers with a result in [0, num_bins) is exact. float32 is exact
        # as long as scaling cannot underflow, i.e. k <= 0; otherwise use float64.
        # Work in cache-sized blocks: one read of x from memory instead of one per step.
        ftype = np.float32 if (x.dtype == np.float32 and self.k <= 0) else np.float64
        flat = x.reshape(-1)
        scale = ftype(math.ldexp(1.0, -self.k))
        offset = ftype(self.offset)
        # The bin numbers go float -> int32 -> intp: numpy converts float to int32 with SIMD but
        # to int64 element by element, and bincount wants intp.
        n = min(BLOCK, flat.size)
        fbuf = _scratch(n, np.dtype(ftype))
        jbuf = _scratch(n, np.dtype(np.int32))
        ibuf = _scratch(n, np.dtype(np.intp))
        counts = np.zeros(self.num_bins, dtype=np.int64)
        for start in range(0, flat.size, BLOCK):
            block = flat[start : start + BLOCK]
            f, j, i = fbuf[: block.size], jbuf[: block.size], ibuf[: block.size]
            np.multiply(block, scale, out=f, dtype=ftype)
            np.floor(f, out=f)
            f -= offset
            np.copyto(j, f, casting="unsafe")
            np.copyto(i, j)
            counts += np.bincount(i, minlength=self.num_bins)
        return counts

    def _channel_count(self, x: npt.NDArray[np.floating]) -> int:
        """The number of channels (last axis) to track for ``x``; 0 when not tracking (this
        drops the per-channel data when ``x`` has a different channel count than before)."""
        if self.channel_mismatch or x.ndim == 0:
            return 0
        c = int(x.shape[-1])
        if c and self.channel_min is not None and self.channel_min.size != c:
            self._drop_channels()
            return 0
        return c

    def _fold_channels(
        self, cmin: FloatArray, cmax: FloatArray
    ) -> tuple[IntArray, IntArray] | None:
        """Fold a batch's (or a shard's) channel extremes in; the channel histograms move to
        the grown grids (their counts of the new data are added by the caller). Returns those
        grids (None without channel histograms)."""
        if self.channel_min is None or self.channel_max is None:
            self.channel_min, self.channel_max = cmin.copy(), cmax.copy()
            if not self.channel_bins:
                return None
            self.channel_hist = np.zeros((cmin.size, self.channel_bins), np.int64)
            return chist.channel_grids(self.channel_min, self.channel_max, self.channel_bins)
        hist = self.channel_hist
        bins = 0 if hist is None else hist.shape[1]
        old = (
            None if hist is None else chist.channel_grids(self.channel_min, self.channel_max, bins)
        )
        np.minimum(self.channel_min, cmin, out=self.channel_min)
        np.maximum(self.channel_max, cmax, out=self.channel_max)
        if hist is None or old is None:
            return None
        new = chist.channel_grids(self.channel_min, self.channel_max, bins)
        chist.regrid(hist, old, new)
        return new

    def _update_channels(self, x: npt.NDArray[np.floating]) -> tuple[float, float] | None:
        """Fold ``x`` into the per-channel extremes; returns the batch's ``(min, max)`` (NaN or
        ±inf when ``x`` holds non-finite values) when it computed them on the way."""
        c = self._channel_count(x)
        if c == 0:
            return None
        flat = x.reshape(-1, c)
        cmin = flat.min(axis=0).astype(np.float64)
        cmax = flat.max(axis=0).astype(np.float64)
        # the batch extremes come for free from the channel extremes (NaN propagates)
        extremes = (float(cmin.min()), float(cmax.max()))
        if not (math.isfinite(extremes[0]) and math.isfinite(extremes[1])):
            finite = np.isfinite(flat)
            cmin = np.where(finite, flat, np.inf).min(axis=0).astype(np.float64)
            cmax = np.where(finite, flat, -np.inf).max(axis=0).astype(np.float64)
        grids = self._fold_channels(cmin, cmax)
        if self.channel_hist is not None and grids is not None:
            self.channel_hist += chist.bin_channels(x, grids, self.channel_hist.shape[1])
        return extremes

    def _merge_channels(self, other: TensorStats) -> None:
        if self.channel_mismatch:
            return
        if other.channel_mismatch:
            self._drop_channels()
            return
        if other.channel_min is None or other.channel_max is None:
            return
        if self.channel_min is not None and self.channel_min.size != other.channel_min.size:
            self._drop_channels()
            return
        fresh = self.channel_min is None
        mine = self.channel_hist
        merged = self._fold_channels(other.channel_min, other.channel_max)
        if fresh:
            self.channel_hist = None if other.channel_hist is None else other.channel_hist.copy()
            return
        if (
            mine is None or other.channel_hist is None or mine.shape != other.channel_hist.shape
        ):  # one side has none (turned off, or written before they existed)
            self.channel_hist = None
            return
        assert other.channel_max is not None and merged is not None
        theirs = other.channel_hist.copy()
        bins = theirs.shape[1]
        chist.regrid(
            theirs, chist.channel_grids(other.channel_min, other.channel_max, bins), merged
        )
        mine += theirs

    def _drop_channels(self) -> None:
        self.channel_mismatch = True
        self.channel_min = self.channel_max = self.channel_hist = None

    # -- equality and serialisation ----------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (exact: floats round-trip through ``repr``; ±inf as strings).

        The histogram is stored sparsely as ``[[bin, count], ...]`` for non-empty bins.
        """
        nz = np.flatnonzero(self.counts)
        return {
            "num_bins": self.num_bins,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "min": _jf(self.min),
            "max": _jf(self.max),
            "k": self.k,
            "offset": self.offset,
            "bins": [[int(i), int(self.counts[i])] for i in nz],
            "channel_min": None if self.channel_min is None else [_jf(v) for v in self.channel_min],
            "channel_max": None if self.channel_max is None else [_jf(v) for v in self.channel_max],
            "channel_mismatch": self.channel_mismatch,
            "channel_hist": None
            if self.channel_hist is None
            else {
                "bins": int(self.channel_hist.shape[1]),
                "counts": [
                    [int(c), int(j), int(self.channel_hist[c, j])]
                    for c, j in zip(*np.nonzero(self.channel_hist), strict=True)
                ],
            },
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorStats:
        try:
            num_bins = int(d["num_bins"])
            counts = np.zeros(num_bins, dtype=np.int64)
            for i, c in d["bins"]:
                counts[int(i)] = int(c)
            cmin, cmax = d.get("channel_min"), d.get("channel_max")
            return cls(
                num_bins=num_bins,
                count=int(d["count"]),
                nonfinite=int(d["nonfinite"]),
                min=_fj(d["min"]),
                max=_fj(d["max"]),
                k=int(d["k"]),
                offset=int(d["offset"]),
                counts=counts,
                channel_min=None if cmin is None else np.array([_fj(v) for v in cmin]),
                channel_max=None if cmax is None else np.array([_fj(v) for v in cmax]),
                channel_mismatch=bool(d.get("channel_mismatch", False)),
                channel_hist=_hist_from_json(d.get("channel_hist"), cmin),
                channel_bins=int((d.get("channel_hist") or {}).get("bins", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise BadInputError(
                f"malformed statistics record ({e!r}); was it written by "
                "gelu-quant calibrate --save-stats?"
            ) from None

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Arrays for an ``.npz`` file (exact), keys prefixed with ``prefix``."""
        out: dict[str, np.ndarray] = {
            prefix + "scalars_i": np.array(
                [
                    self.num_bins,
                    self.count,
                    self.nonfinite,
                    self.k,
                    self.offset,
                    int(self.channel_mismatch),
                ],
                dtype=np.int64,
            ),
            prefix + "scalars_f": np.array([self.min, self.max], dtype=np.float64),
            prefix + "counts": self.counts,
        }
        if self.channel_min is not None and self.channel_max is not None:
            out[prefix + "channel_min"] = self.channel_min
            out[prefix + "channel_max"] = self.channel_max
        if self.channel_hist is not None:
            out[prefix + "channel_hist"] = self.channel_hist
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> TensorStats:
        try:
            si = arrays[prefix + "scalars_i"]
            sf = arrays[prefix + "scalars_f"]
            cmin_key, cmax_key = prefix + "channel_min", prefix + "channel_max"
            return cls(
                num_bins=int(si[0]),
                count=int(si[1]),
                nonfinite=int(si[2]),
                k=int(si[3]),
                offset=int(si[4]),
                channel_mismatch=bool(si[5]),
                min=float(sf[0]),
                max=float(sf[1]),
                counts=np.asarray(arrays[prefix + "counts"], dtype=np.int64).copy(),
                channel_min=(
                    np.asarray(arrays[cmin_key], dtype=np.float64).copy()
                    if cmin_key in arrays
                    else None
                ),
                channel_max=(
                    np.asarray(arrays[cmax_key], dtype=np.float64).copy()
                    if cmax_key in arrays
                    else None
                ),
                channel_hist=(
                    np.asarray(arrays[prefix + "channel_hist"], dtype=np.int64).copy()
                    if prefix + "channel_hist" in arrays and cmin_key in arrays
                    else None
                ),
                channel_bins=(
                    int(arrays[prefix + "channel_hist"].shape[1])
                    if prefix + "channel_hist" in arrays
                    else 0
                ),
            )
        except (KeyError, IndexError) as e:
            raise BadInputError(
                f"statistics arrays lack {e.args[0]!r}; was the file written by "
                "gelu-quant calibrate --save-stats?"
            ) from None

    def save(self, path: str | Path) -> None:
        """Write to ``.npz`` or ``.json`` (by extension)."""
        p = Path(path)
        if p.suffix == ".json":
            write_bytes_atomic(p, json.dumps(self.to_json()).encode())
        else:
            buf = io.BytesIO()
            np.savez_compressed(buf, **self.to_arrays())  # type: ignore[arg-type]
            write_bytes_atomic(p, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> TensorStats:
        p = Path(path)
        if p.suffix == ".json":
            return cls.from_json(json.loads(p.read_text()))
        with np.load(p) as z:
            return cls.from_arrays(dict(z))


_SCRATCH = threading.local()


def _scratch(n: int, dtype: np.dtype[Any]) -> np.ndarray:
    """A reusable work buffer of ``n`` elements (one per dtype and thread, grown on demand).

    Re-using buffers avoids page-faulting fresh memory for every batch; it costs one buffer of
    the largest batch per dtype and thread.
    """
    bufs: dict[np.dtype[Any], np.ndarray] | None = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = {}
        _SCRATCH.bufs = bufs
    buf = bufs.get(dtype)
    if buf is None or buf.size < n:
        buf = np.empty(n, dtype=dtype)
        bufs[dtype] = buf
    return buf[:n]


def _rebin(counts: IntArray, k: int, offset: int, k2: int, offset2: int) -> IntArray:
    """Counts on grid ``(k, offset)`` moved to the coarser-or-equal grid ``(k2, offset2)``."""
    if k2 < k:
        raise AssertionError("re-binning only coarsens")
    nz = np.flatnonzero(counts)
    out = np.zeros_like(counts)
    if nz.size:
        g = (nz.astype(np.int64) + offset) >> (k2 - k)  # arithmetic shift == floor division
        idx = g - offset2
        if idx.min() < 0 or idx.max() >= counts.size:
            raise AssertionError("re-binned counts fall outside the window")
        np.add.at(out, idx, counts[nz])
    return out


def _hist_from_json(d: Mapping[str, Any] | None, cmin: list[Any] | None) -> IntArray | None:
    if d is None or cmin is None:
        return None
    hist = np.zeros((len(cmin), int(d["bins"])), np.int64)
    for c, j, n in d["counts"]:
        hist[int(c), int(j)] = int(n)
    return hist


def _jf(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")


def _fj(v: float | str) -> float:
    return float(v)
