"""Per-channel histograms: every channel of the last axis its own exact, mergeable histogram.

Grouped tables (``convert --groups K``) choose one range per group of channels. With only
per-channel min/max that range can only be the members' min/max; with a histogram per channel a
group's histogram is the sum of its members' and any range method (percentile, entropy, MSE)
runs on it.

Each channel's histogram has :data:`CHANNEL_BINS` bins on the same kind of grid as the tensor's
(:mod:`gelu_quant.calib.stats`): anchored at 0, width ``2**k``, ``k`` the smallest exponent for
which the channel's finite ``[min, max]`` fits, the window starting at the bin of the minimum.
The grid is a function of the channel's min and max alone (:func:`channel_grids`), so the
histograms, like the extremes, depend only on the multiset of values each channel saw: shards
merge exactly, in any order. When a channel's range grows its counts move to the coarser grid
exactly (doubling the width maps bin ``g`` to ``g >> 1``).

Memory: ``channels × CHANNEL_BINS`` int64 counters per site (all-MiniLM-L6-v2: 1536 × 512 × 8
bytes = 6.3 MB per GELU), independent of the amount of data.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gelu_quant.calib.grid import IDX_BITS, K_MIN, width_exponent

#: Bins of each channel's histogram (the grid puts at least half of them on the channel's data).
CHANNEL_BINS = 512

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def width_exponents(lo: FloatArray, hi: FloatArray, bins: int = CHANNEL_BINS) -> IntArray:
    """:func:`~gelu_quant.calib.grid.width_exponent` of every channel at once (the same
    exponent, element for element; ``K_MIN`` for a channel without finite values)."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    ok = np.isfinite(lo) & np.isfinite(hi)
    lo = np.where(ok, lo, 0.0)
    hi = np.where(ok, hi, 0.0)
    mag = np.maximum(np.abs(lo), np.abs(hi))
    k = np.full(lo.shape, K_MIN, np.int64)
    k = np.where(mag > 0.0, np.maximum(k, np.frexp(mag)[1].astype(np.int64) - IDX_BITS), k)
    span = hi - lo
    k = np.where(span > 0.0, np.maximum(k, np.frexp(span / bins)[1].astype(np.int64) - 2), k)
    while True:
        fits = (np.floor(np.ldexp(hi, -k)) - np.floor(np.ldexp(lo, -k)) < bins) & (
            mag < np.ldexp(1.0, k + IDX_BITS)
        )
        if fits.all():
            return k
        k = k + ~fits


def channel_grids(
    cmin: FloatArray, cmax: FloatArray, bins: int = CHANNEL_BINS
) -> tuple[IntArray, IntArray]:
    """Each channel's canonical ``(k, offset)``: width ``2**k``, ``offset`` the global index of
    its first bin (``(K_MIN, 0)`` for a channel without finite values)."""
    k = width_exponents(cmin, cmax, bins)
    lo = np.where(np.isfinite(cmin), cmin, 0.0)
    off = np.floor(np.ldexp(lo, -k)).astype(np.int64)
    return k, off


def rebin_row(counts: IntArray, k: int, off: int, k2: int, off2: int, size: int) -> IntArray:
    """One histogram on grid ``(k, off)`` moved to the coarser-or-equal ``(k2, off2)`` with
    ``size`` bins."""
    if k2 < k:
        raise AssertionError("re-binning only coarsens")
    out = np.zeros(size, np.int64)
    nz = np.flatnonzero(counts)
    if nz.size:
        idx = ((nz.astype(np.int64) + off) >> (k2 - k)) - off2
        if idx.min() < 0 or idx.max() >= size:
            raise AssertionError("re-binned channel counts fall outside the window")
        np.add.at(out, idx, counts[nz])
    return out


def regrid(hist: IntArray, old: tuple[IntArray, IntArray], new: tuple[IntArray, IntArray]) -> None:
    """Move every row of ``hist`` whose grid changed from ``old`` to ``new`` (in place)."""
    (k0, o0), (k1, o1) = old, new
    for r in np.flatnonzero((k0 != k1) | (o0 != o1)):
        if hist[r].any():
            hist[r] = rebin_row(
                hist[r], int(k0[r]), int(o0[r]), int(k1[r]), int(o1[r]), hist.shape[1]
            )


def bin_channels(
    x: npt.NDArray[np.floating], grids: tuple[IntArray, IntArray], bins: int
) -> IntArray:
    """Counts ``[channels, bins]`` of the finite values of ``x`` (``[..., channels]``) on each
    channel's grid (numpy; the C kernel ``channel_histograms`` computes the same)."""
    k, off = grids
    c = k.size
    flat = x.reshape(-1, c).astype(np.float64)
    finite = np.isfinite(flat)
    with np.errstate(invalid="ignore"):
        b = np.floor(flat * np.ldexp(1.0, -k)) - off
    b = np.where(finite, b, 0.0).astype(np.int64)
    if finite.any() and (b[finite].min() < 0 or b[finite].max() >= bins):
        raise AssertionError("values fell outside their channel's histogram window")
    idx = (np.arange(c, dtype=np.int64) * bins + b)[finite]
    return np.bincount(idx, minlength=c * bins).reshape(c, bins)


def group_histogram(
    hist: IntArray, cmin: FloatArray, cmax: FloatArray, members: npt.ArrayLike
) -> tuple[int, int, IntArray, float, float]:
    """The members' histograms summed on one grid: ``(k, offset, counts, min, max)``.

    The grid is the coarsest of the members' grids, coarsened further until the group's span
    fits in ``CHANNEL_BINS`` bins; every member's counts move to it exactly.
    """
    m = np.asarray(members, np.int64)
    lo, hi = float(np.min(cmin[m])), float(np.max(cmax[m]))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("a group without finite values has no histogram")
    bins = hist.shape[1]
    ks, offs = channel_grids(cmin[m], cmax[m], bins)
    k = max(int(ks.max()), width_exponent(lo, hi, bins))
    off = math.floor(math.ldexp(lo, -k))
    size = math.floor(math.ldexp(hi, -k)) - off + 1
    counts = np.zeros(size, np.int64)
    for j, ch in enumerate(m):
        counts += rebin_row(hist[ch], int(ks[j]), int(offs[j]), k, off, size)
    return k, off, counts, lo, hi
