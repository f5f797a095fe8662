"""Range selection: pure functions from :class:`TensorStats` to an input range ``(lo, hi)``.

- ``minmax``: the observed finite minimum and maximum.
- ``percentile``: ``[q(1 - P/100), q(P/100)]``, the two tails clipped separately (P = 99.99 keeps
  all but 0.01 % of values on each side), from the histogram (within one bin width).
- ``entropy``: the KL-divergence threshold search of TensorRT as ONNX Runtime implements it
  (``HistogramCollector.get_entropy_threshold``): a histogram symmetric about 0, candidate
  ranges growing one bin each side, outliers folded into the edge bins, the candidate
  re-quantized to ``num_quantized_bins`` levels, both smoothed, the least KL divergence wins.
  ORT's quirks are kept (integer-truncated expanded ``q``, float32 smoothing, the bins past the
  last whole quantized bin left empty in ``q``). ORT's default of 128 histogram bins makes its
  search degenerate (one candidate: the full range); here the search runs on up to 2048 bins of
  the exact histogram, and ``num_quantized_bins`` defaults to 255 (the int8 levels).
- ``mse``: the range whose int8-in / int8-out GELU (input quantized on ``[lo, hi]``, output on
  GELU's exact output range over ``[lo, hi]``) has the least mean squared error against float64
  GELU over the observed distribution (bin centres weighted by counts); a coordinate search over
  quantile and linear candidates for each end.

The output side of any input range is GELU's exact output range over it:
:func:`output_range`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import BadInputError
from gelu_quant.numerics import GELU_ARGMIN, GeluForm, gelu, gelu_output_range, quick_gelu
from gelu_quant.qparams import (
    QDType,
    dequantize_linear,
    qlimits,
    qparams_from_ranges,
    quantize_linear,
)

MethodName = Literal["minmax", "percentile", "entropy", "mse"]
METHODS: tuple[MethodName, ...] = ("minmax", "percentile", "entropy", "mse")

DEFAULT_METHOD: MethodName = "entropy"
"""The best per-tensor method measured on held-out text (``benchmarks/accuracy_minilm.py``,
all-MiniLM-L6-v2, int8 tables with the negative tail cut): entropy 1.46e-3 in 1 − cos of the
sentence embeddings, MSE 2.08e-3, min/max 3.64e-3, percentile 6.62e-3."""
DEFAULT_PERCENTILE = 99.99

Range = tuple[float, float]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _need_data(stats: TensorStats) -> None:
    if stats.count == 0:
        raise BadInputError(
            "no finite values observed for this site; calibrate with data that reaches it"
        )


def minmax_range(stats: TensorStats) -> Range:
    """The observed finite minimum and maximum."""
    _need_data(stats)
    return float(stats.min), float(stats.max)


def percentile_range(stats: TensorStats, p: float = DEFAULT_PERCENTILE) -> Range:
    """``[q(1 - p/100), q(p/100)]`` of the finite values (each tail clipped separately)."""
    _need_data(stats)
    if not 50.0 < p <= 100.0:
        raise BadInputError(f"percentile must be in (50, 100], got {p}")
    return stats.quantile(1.0 - p / 100.0), stats.quantile(p / 100.0)


# -- entropy -----------------------------------------------------------------------------------
def symmetric_histogram(stats: TensorStats, max_bins: int = 2048) -> tuple[FloatArray, FloatArray]:
    """The histogram re-binned exactly onto ``2M <= max_bins`` bins symmetric about 0.

    Returns ``(counts, edges)`` with ``edges = [-M w', ..., M w']``; bin ``j`` covers
    ``[edges[j], edges[j+1])``.
    """
    _need_data(stats)
    nz = np.flatnonzero(stats.counts)
    g = nz.astype(np.int64) + stats.offset
    shift = 0
    while True:
        gs = g >> shift
        m = max(int(-gs.min()), int(gs.max()) + 1, 1)
        if 2 * m <= max_bins:
            break
        shift += 1
    hist = np.zeros(2 * m, dtype=np.float64)
    np.add.at(hist, gs + m, stats.counts[nz].astype(np.float64))
    w = math.ldexp(1.0, stats.k + shift)
    edges = np.arange(-m, m + 1, dtype=np.float64) * w
    return hist, edges


def _smooth_rows(
    d: FloatArray, valid: npt.NDArray[np.bool_], eps: float = 0.0001
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """ORT's ``smooth_distribution`` applied to each row of ``d`` (its first ``valid`` entries).

    Element for element the same float32 arithmetic as ORT (``eps`` and each row's ``eps1``
    rounded to float32, one float32 addition). Returns the smoothed rows (0 past each row's end)
    and which rows ORT would reject (no non-zero entry, ``eps1 >= 1`` or an entry ``<= 0``).
    """
    is_zero = (d == 0) & valid
    is_nonzero = (d != 0) & valid
    n_zeros = is_zero.sum(axis=1).astype(np.float64)
    n_nonzeros = is_nonzero.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps1 = eps * n_zeros / n_nonzeros
    bad = (n_nonzeros == 0) | ~(eps1 < 1.0)
    neg_eps1 = (-eps1).astype(np.float32)[:, None]
    add = np.where(is_zero, np.float32(eps), np.where(is_nonzero, neg_eps1, np.float32(0.0)))
    hist = d.astype(np.float32)
    hist += add
    bad |= ((hist <= 0) & valid).any(axis=1)
    return hist, bad


def _kl_rows(
    p: npt.NDArray[np.float32], q: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]
) -> FloatArray:
    """``sum(p log(p/q))`` of each row's normalised distributions (scipy.stats.entropy)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # rows ORT rejects may hold <= 0
        pn = p.astype(np.float64) / p.sum(axis=1, dtype=np.float64)[:, None]
        qn = q.astype(np.float64) / q.sum(axis=1, dtype=np.float64)[:, None]
        pn[~valid] = 1.0
        qn[~valid] = 1.0
        out: FloatArray = np.sum(pn * np.log(pn / qn), axis=1)
    return out


def _entropy_divergences(
    hist: FloatArray, cum: FloatArray, starts: IntArray, ends: IntArray, merged: int, nq: int
) -> FloatArray:
    """KL divergence of each candidate ``hist[s:e]`` whose re-quantization merges ``merged``
    bins into one (all candidates at once, one row each; ``inf`` where ORT rejects)."""
    rows = starts.size
    lengths = ends - starts
    width = int(lengths.max())
    t = np.arange(width)
    valid = t[None, :] < lengths[:, None]
    padded = np.concatenate([hist, np.zeros(width)])
    sliced = np.where(valid, padded[starts[:, None] + t[None, :]], 0.0)
    p = sliced.copy()
    p[:, 0] += cum[starts]  # outliers folded into the edge bins
    p[np.arange(rows), lengths - 1] += cum[-1] - cum[ends]
    body = nq * merged
    quantized = sliced[:, :body].reshape(rows, nq, merged).sum(axis=2)
    quantized[:, -1] += sliced[:, body:].sum(axis=1)
    norm = (p[:, :body] != 0).reshape(rows, nq, merged).sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        expanded = np.where(norm != 0, np.trunc(quantized / np.maximum(norm, 1)), 0.0)
    q = np.zeros_like(p)
    q[:, :body] = np.repeat(expanded, merged, axis=1)
    ps, bad_p = _smooth_rows(p, valid)
    qs, bad_q = _smooth_rows(q, valid)
    div = _kl_rows(ps, qs, valid)
    div[bad_p | bad_q | np.isnan(div)] = math.inf
    return div


def entropy_threshold(
    hist: FloatArray, edges: FloatArray, num_quantized_bins: int = 255
) -> tuple[float, float]:
    """ORT's KL threshold search on a symmetric histogram; returns ``(edges[s], edges[e])``.

    Candidate ``i`` is ``hist[zero - i : zero + i + 1]`` for ``i`` from ``nq // 2`` to the half
    width; candidates that merge the same number of bins are evaluated together. The first
    least divergence wins (as ``np.argmin``); the full range when every candidate is rejected.
    """
    hist = np.asarray(hist, dtype=np.float64)
    nb = hist.size
    zero = nb // 2
    nq = num_quantized_bins
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    half_widths = np.arange(nq // 2, zero + 1)
    starts = zero - half_widths
    ends = np.minimum(zero + half_widths + 1, nb)
    merged = (ends - starts) // nq
    div = np.full(half_widths.size, math.inf)
    for m in np.unique(merged[merged > 0]):
        rows = np.flatnonzero(merged == m)
        div[rows] = _entropy_divergences(hist, cum, starts[rows], ends[rows], int(m), nq)
    if div.size == 0 or not np.isfinite(div).any():
        return float(edges[0]), float(edges[-1])
    best = int(np.argmin(div))
    return float(edges[starts[best]]), float(edges[ends[best]])


def quantized_bins(bits: int | None) -> int:
    """The levels ``entropy`` re-quantizes to for ``bits``-bit input codes: ``2**bits - 1``
    (255 for 8-bit codes and for None, the int8 default)."""
    return 255 if bits is None else (1 << bits) - 1


def entropy_range(stats: TensorStats, num_quantized_bins: int = 255, max_bins: int = 2048) -> Range:
    """KL-divergence (TensorRT / ORT) range, clamped to the observed ``[min, max]``."""
    hist, edges = symmetric_histogram(stats, max_bins)
    lo, hi = entropy_threshold(hist, edges, num_quantized_bins)
    return max(lo, float(stats.min)), min(hi, float(stats.max))


# -- mse ---------------------------------------------------------------------------------------
def gelu_fn(form: str) -> Callable[[npt.ArrayLike], FloatArray]:
    """float64 reference of a site's form (``exact``, ``tanh``, ``quick``; ``erf`` = exact)."""
    if form in ("erf", "exact"):
        return lambda x: gelu(x, "exact")
    if form == "tanh":
        return lambda x: gelu(x, "tanh")
    if form == "quick":
        return quick_gelu
    raise BadInputError(f"unknown GELU form {form!r}; expected exact, tanh or quick")


def output_range(lo: float, hi: float, form: str = "exact") -> Range:
    """GELU's exact output range over the input range ``[lo, hi]``."""
    if form in ("erf", "exact", "tanh"):
        gelu_form: GeluForm = "tanh" if form == "tanh" else "exact"
        return gelu_output_range(lo, hi, gelu_form)
    f = gelu_fn(form)
    xs = np.concatenate([np.linspace(lo, hi, 4097), [lo, hi]])
    # QuickGELU's minimum is near x = -1.28 / alpha: refine on a dense grid around it
    ys = f(xs)
    j = int(np.argmin(ys))
    step = (hi - lo) / 4096 if hi > lo else 0.0
    fine = np.linspace(max(lo, xs[j] - step), min(hi, xs[j] + step), 4097)
    ymin = min(float(ys.min()), float(f(fine).min()))
    return ymin, float(ys.max())


def output_ranges(
    lo: FloatArray, hi: FloatArray, form: str = "exact"
) -> tuple[FloatArray, FloatArray]:
    """:func:`output_range` of every ``[lo[i], hi[i]]`` (vectorised for the erf form)."""
    if form not in ("erf", "exact"):
        pairs = [output_range(float(a), float(b), form) for a, b in zip(lo, hi, strict=True)]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if not np.all(lo <= hi):
        raise ValueError("empty interval among the ranges")
    g_lo, g_hi = gelu(lo), gelu(hi)
    out_lo = np.minimum(g_lo, g_hi)
    inside = (lo <= GELU_ARGMIN) & (hi >= GELU_ARGMIN)
    out_lo = np.where(inside, np.minimum(out_lo, gelu(np.array([GELU_ARGMIN]))[0]), out_lo)
    return out_lo, np.maximum(g_lo, g_hi)


def _quantized_gelu_mses(
    centres: FloatArray,
    weights: FloatArray,
    ref: FloatArray,
    ranges: list[Range],
    form: str,
    dtype: QDType,
    bits: int | None = None,
    out_bits: int | None = None,
) -> FloatArray:
    """Weighted MSE of ``Q_out(GELU(DQ(Q_in(x))))`` against ``ref`` (float64 GELU) at
    ``centres``, for every input range at once (one quantizer per row); ``inf`` for a range
    that does not straddle 0. ``bits`` / ``out_bits``: the input / output code widths (None:
    the dtype's; ``out_bits`` defaults to ``bits``)."""
    ob = bits if out_bits is None else out_bits
    out = np.full(len(ranges), math.inf)
    rows = [k for k, (lo, hi) in enumerate(ranges) if min(lo, 0.0) < max(hi, 0.0)]
    if not rows:
        return out
    lo = np.array([ranges[k][0] for k in rows])
    hi = np.array([ranges[k][1] for k in rows])
    s_in, z_in = qparams_from_ranges(lo, hi, dtype, bits)
    s_out, z_out = qparams_from_ranges(*output_ranges(lo, hi, form), dtype, ob)
    s_in, z_in, s_out, z_out = s_in[:, None], z_in[:, None], s_out[:, None], z_out[:, None]
    qmin, qmax = qlimits(dtype, bits)
    codes = np.arange(qmin, qmax + 1)[None, :]
    y = gelu_fn(form)(dequantize_linear(codes, s_in, z_in))
    table = dequantize_linear(quantize_linear(y, s_out, z_out, dtype, ob), s_out, z_out)
    idx = quantize_linear(centres[None, :], s_in, z_in, dtype, bits).astype(np.int64) - qmin
    err = np.take_along_axis(table, idx, axis=1) - ref[None, :]
    out[rows] = np.sum(weights * err * err, axis=1) / np.sum(weights)
    return out


def mse_range(
    stats: TensorStats,
    form: str = "exact",
    dtype: QDType = "int8",
    candidates: int = 24,
    bits: int | None = None,
    out_bits: int | None = None,
) -> Range:
    """The range minimising the quantized GELU's output MSE (coordinate search); ``bits`` /
    ``out_bits``: the input / output code widths (2..8) in the ``dtype`` container (None: the
    dtype's; ``out_bits`` defaults to ``bits``), so the range is the best for that table."""
    _need_data(stats)
    nz = np.flatnonzero(stats.counts)
    w = stats.bin_width
    centres = (nz.astype(np.float64) + stats.offset + 0.5) * w
    centres = np.clip(centres, stats.min, stats.max)
    weights = stats.counts[nz].astype(np.float64)
    ref = gelu_fn(form)(centres)
    vmin, vmax = float(stats.min), float(stats.max)
    if not vmin < vmax:
        return vmin, vmax
    levels = 1.0 - np.logspace(-1, -7, candidates)

    def cands(side: int) -> list[float]:
        if side > 0:
            qs = [stats.quantile(float(q)) for q in levels]
            lin = list(np.linspace(vmax / candidates, vmax, candidates)) if vmax > 0 else []
            vals = [*qs, *lin, vmax]
            return sorted({v for v in vals if v > 0} or {vmax})
        qs = [stats.quantile(float(1 - q)) for q in levels]
        lin = list(np.linspace(vmin / candidates, vmin, candidates)) if vmin < 0 else []
        vals = [*qs, *lin, vmin]
        return sorted({v for v in vals if v < 0} or {vmin})

    def costs(ranges: list[Range]) -> FloatArray:
        c = _quantized_gelu_mses(centres, weights, ref, ranges, form, dtype, bits, out_bits)
        c[np.isnan(c)] = math.inf
        return c

    his, los = cands(+1), cands(-1)
    lo, hi = vmin, vmax
    best = float(costs([(lo, hi)])[0])
    # coordinate search: each end in turn moves to its best candidate (the first of equals)
    for _ in range(2):
        c = costs([(lo, h) for h in his])
        j = int(np.argmin(c))
        if c[j] < best:
            best, hi = float(c[j]), his[j]
        c = costs([(lval, hi) for lval in los])
        j = int(np.argmin(c))
        if c[j] < best:
            best, lo = float(c[j]), los[j]
    return lo, hi


def select_range(
    stats: TensorStats,
    method: MethodName,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    form: str = "exact",
    dtype: QDType = "int8",
    bits: int | None = None,
    out_bits: int | None = None,
) -> Range:
    """Dispatch to one method by name. ``bits`` / ``out_bits``: the table's input / output code
    widths (None: the dtype's, 8): ``mse`` scores its table at them and ``entropy`` re-quantizes
    to ``2**bits - 1`` levels (:func:`quantized_bins`); minmax and percentile do not depend on
    them."""
    if method == "minmax":
        return minmax_range(stats)
    if method == "percentile":
        return percentile_range(stats, percentile)
    if method == "entropy":
        return entropy_range(stats, quantized_bins(bits))
    if method == "mse":
        return mse_range(stats, form, dtype, bits=bits, out_bits=out_bits)
    raise BadInputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
