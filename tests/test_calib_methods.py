"""Range methods on synthetic distributions with known answers, against independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gelu_quant.calib.methods import (
    entropy_range,
    entropy_threshold,
    minmax_range,
    mse_range,
    output_range,
    output_ranges,
    percentile_range,
    select_range,
    symmetric_histogram,
)
from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import BadInputError
from gelu_quant.numerics import gelu_exact
from gelu_quant.qparams import QParams


def _stats(*arrays: np.ndarray) -> TensorStats:
    st = TensorStats()
    for a in arrays:
        st.update(a)
    return st


def test_minmax_on_uniform_is_the_extremes() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 5.0, 100_000).astype(np.float32)
    assert minmax_range(_stats(x)) == (float(x.min()), float(x.max()))


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_of_known_distributions(p: float) -> None:
    rng = np.random.default_rng(1)
    u = rng.uniform(-2.0, 6.0, 400_000).astype(np.float32)
    st = _stats(u)
    lo, hi = percentile_range(st, p)
    tail = 1.0 - p / 100.0
    # the sample quantiles, within one bin width
    assert abs(lo - np.quantile(u.astype(np.float64), tail)) <= st.bin_width
    assert abs(hi - np.quantile(u.astype(np.float64), 1.0 - tail)) <= st.bin_width
    # and the distribution's: U(-2, 6) has q(t) = -2 + 8 t (sampling error ~ 8 sqrt(t/n))
    assert lo == pytest.approx(-2.0 + 8.0 * tail, abs=st.bin_width + 8 * 4 * math.sqrt(tail / 4e5))
    assert hi == pytest.approx(6.0 - 8.0 * tail, abs=st.bin_width + 8 * 4 * math.sqrt(tail / 4e5))


def test_percentile_rejects_bad_p() -> None:
    st = _stats(np.arange(10, dtype=np.float32))
    with pytest.raises(BadInputError):
        percentile_range(st, 40.0)


def _ort_entropy_oracle(hist: np.ndarray, edges: np.ndarray, nq: int) -> tuple[float, float]:
    """A plain-loop float64 transcription of ORT's get_entropy_threshold (TensorRT's method)."""
    nb = len(hist)
    zero = nb // 2
    best, best_t = math.inf, (edges[0], edges[-1])
    for i in range(nq // 2, zero + 1):
        s, e = zero - i, min(zero + i + 1, nb)
        sliced = [float(v) for v in hist[s:e]]
        p = list(sliced)
        p[0] += float(sum(hist[:s]))
        p[-1] += float(sum(hist[e:]))
        nz = [1 if v != 0 else 0 for v in p]
        m = len(sliced) // nq
        qb = [sum(sliced[j * m : j * m + m]) for j in range(nq)]
        qb[-1] += sum(sliced[nq * m :])
        q = [0.0] * len(p)
        for j in range(nq):
            norm = sum(nz[j * m : j * m + m])
            if norm:
                for t in range(j * m, j * m + m):
                    q[t] = float(int(qb[j] / norm))

        def smooth(d: list[float]) -> list[float] | None:
            zeros = sum(1 for v in d if v == 0)
            nonz = len(d) - zeros
            if not nonz:
                return None
            e1 = 1e-4 * zeros / nonz
            return [1e-4 if v == 0 else v - e1 for v in d]

        ps, qs = smooth(p), smooth(q)
        if ps is None or qs is None:
            continue
        sp, sq = sum(ps), sum(qs)
        kl = sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs, strict=True))
        if kl < best - 1e-9:
            best, best_t = kl, (float(edges[s]), float(edges[e]))
    return best_t


def test_entropy_matches_plain_transcription_of_ort() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(20_000), [9.0, -7.5]]).astype(np.float32)
    st = _stats(x)
    hist, edges = symmetric_histogram(st, max_bins=256)
    assert hist.sum() == x.size
    assert entropy_threshold(hist, edges, 63) == _ort_entropy_oracle(hist, edges, 63)


def test_entropy_matches_the_transcription_across_merge_groups() -> None:
    # > 512 bins and 31 levels: candidates merge 1 to over 16 bins into a level, each group of
    # candidates evaluated together; integer-valued data leaves most bins empty (smoothing)
    rng = np.random.default_rng(5)
    x = np.concatenate([np.round(rng.standard_normal(30_000) * 8) / 4, [-70.0, 55.0]])
    st = _stats(x.astype(np.float32))
    hist, edges = symmetric_histogram(st, max_bins=1024)
    assert 512 < hist.size <= 1024 and np.count_nonzero(hist) < 200
    assert entropy_threshold(hist, edges, 31) == _ort_entropy_oracle(hist, edges, 31)


def test_entropy_clips_a_clear_outlier() -> None:
    rng = np.random.default_rng(3)
    bulk = rng.standard_normal(1_000_000).astype(np.float32)
    outliers = np.array([60.0, -45.0, 52.0], dtype=np.float32)
    st = _stats(bulk, outliers)
    lo, hi = entropy_range(st)
    assert minmax_range(st) == (-45.0, 60.0)
    # the KL range keeps the bulk (beyond 3 sigma) and drops the outliers
    assert -20.0 < lo < -3.0 and 3.0 < hi < 20.0
    # the symmetric histogram is an exact re-binning
    hist, edges = symmetric_histogram(st)
    assert hist.sum() == st.count and edges[0] == -edges[-1] and hist.size <= 2048


def _oracle_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """int8-in / int8-out GELU output MSE over raw samples, with the output range derived from
    GELU's exact output range over [lo, hi] (minimum -0.16997 at -0.7518 when inside)."""
    qin = QParams.from_range(lo, hi)
    xin = qin.dequantize(qin.quantize(x.astype(np.float64)))
    y = gelu_exact(xin)
    olo = min(float(gelu_exact(np.array([lo]))[0]), float(gelu_exact(np.array([hi]))[0]))
    if lo <= -0.7517915246935645 <= hi:
        olo = min(olo, -0.16997120747990369)
    ohi = max(float(gelu_exact(np.array([lo]))[0]), float(gelu_exact(np.array([hi]))[0]))
    qout = QParams.from_range(olo, ohi)
    yq = qout.dequantize(qout.quantize(y))
    return float(np.mean((yq - gelu_exact(x.astype(np.float64))) ** 2))


def test_mse_is_near_optimal_and_clips_the_flat_negative_side() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(20_000) * 1.5, [40.0, -30.0]]).astype(np.float32)
    st = _stats(x)
    lo, hi = mse_range(st)
    # GELU is ~0 below -4: clipping the negative outlier costs nothing, so MSE drops it ...
    assert -6.0 < lo < -1.0
    # ... while clipping the positive one (GELU(x) = x there) would cost (40 - hi)^2 / n
    assert hi > 30.0
    best = _oracle_mse(x, lo, hi)
    others = [
        minmax_range(st),
        percentile_range(st, 99.99),
        percentile_range(st, 99.9),
        entropy_range(st),
        (lo, 40.0),
        (-30.0, hi),
    ]
    for r in others:
        assert best <= _oracle_mse(x, *r) * 1.02, r


def test_mse_on_outlier_free_data_keeps_most_of_the_range() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(-4.0, 4.0, 50_000).astype(np.float32)
    st = _stats(x)
    _, hi = mse_range(st)
    assert hi > 3.0  # GELU's positive side is the identity: clipping it costs a lot


def test_output_range_is_gelus_exact_range() -> None:
    assert output_range(-5.0, 3.0) == pytest.approx((-0.16997120747990369, 3.0 * 0.9986501), 1e-6)
    lo, _ = output_range(0.5, 2.0)
    assert lo == pytest.approx(float(gelu_exact(np.array([0.5]))[0]))
    # QuickGELU: numeric minimum of x * sigmoid(1.702 x)
    xs = np.linspace(-5, 5, 2_000_001)
    ys = xs / (1 + np.exp(-1.702 * xs))
    qlo, qhi = output_range(-5.0, 5.0, "quick")
    assert qlo == pytest.approx(ys.min(), abs=1e-9) and qhi == pytest.approx(ys.max())


def test_select_range_dispatch_and_empty_stats() -> None:
    st = _stats(np.linspace(-1, 1, 1001, dtype=np.float32))
    assert select_range(st, "minmax") == (-1.0, 1.0)
    with pytest.raises(BadInputError):
        select_range(st, "bogus")  # type: ignore[arg-type]
    with pytest.raises(BadInputError):
        minmax_range(TensorStats())


@pytest.mark.parametrize("variant", ["erf", "tanh", "quick"])
def test_output_ranges_equal_output_range_row_by_row(variant: str) -> None:
    rng = np.random.default_rng(3)
    lo = np.concatenate([-rng.lognormal(0, 1.5, 60), [-0.7517915246935645, -0.5, 2.0]])
    hi = np.concatenate([rng.lognormal(0, 1.5, 60), [0.1, -0.2, 3.0]])
    olo, ohi = output_ranges(lo, hi, variant)
    for i in range(lo.size):
        assert (olo[i], ohi[i]) == output_range(float(lo[i]), float(hi[i]), variant)
