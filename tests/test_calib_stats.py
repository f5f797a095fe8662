"""TensorStats against numpy oracles over the concatenated data; exact merges; serialisation.

Every test runs twice: with the compiled statistics kernel and with the numpy loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from gelu_quant.calib import stats as stats_module
from gelu_quant.calib.stats import NUM_BINS, TensorStats, width_exponent


@pytest.fixture(params=["compiled", "numpy"], autouse=True, scope="module")
def backend(request: pytest.FixtureRequest) -> object:
    kernel = stats_module._kernel
    if request.param == "compiled" and kernel is None:
        pytest.skip("the compiled statistics kernel is not built")
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "numpy":
            mp.setattr(stats_module, "_kernel", None)
        assert stats_module.backend() == request.param
        yield request.param


def _batches(seed: int = 0) -> list[np.ndarray]:
    """Batches whose range keeps growing (forcing re-binning), with a few non-finite values."""
    rng = np.random.default_rng(seed)
    out = []
    for i, scale in enumerate([0.01, 0.5, 3.0, 1.0, 40.0, 2.0]):
        b = (rng.standard_normal((3, 7, 24)) * scale + (i - 2) * 0.3).astype(np.float32)
        out.append(b)
    out[2][0, 0, :3] = [np.nan, np.inf, -np.inf]
    out[4][1, 2, 5] = np.nan
    return out


def _oracle_counts(x: np.ndarray, k: int, offset: int, n: int) -> np.ndarray:
    """Histogram on the grid [offset*2^k + j*2^k) computed independently in float64."""
    g = np.floor(x.astype(np.float64) / 2.0**k).astype(np.int64) - offset
    assert g.min() >= 0 and g.max() < n
    return np.bincount(g, minlength=n)


def test_observer_matches_numpy_oracle() -> None:
    batches = _batches()
    st = TensorStats()
    for b in batches:
        st.update(b)
    allv = np.concatenate([b.ravel() for b in batches])
    fin = allv[np.isfinite(allv)]
    assert st.count == fin.size
    assert st.nonfinite == allv.size - fin.size == 4
    assert st.min == float(fin.min()) and st.max == float(fin.max())
    assert int(st.counts.sum()) == fin.size
    np.testing.assert_array_equal(st.counts, _oracle_counts(fin, st.k, st.offset, st.num_bins))
    # canonical width: the range fits at k but not at k - 1
    span = math.floor(st.max / 2.0**st.k) - math.floor(st.min / 2.0**st.k)
    span_finer = math.floor(st.max / 2.0 ** (st.k - 1)) - math.floor(st.min / 2.0 ** (st.k - 1))
    assert span < NUM_BINS <= span_finer
    assert st.num_bins >= 2048
    # per-channel min/max on the last axis, finite values only
    stacked = np.concatenate([b.reshape(-1, 24) for b in batches])
    masked_lo = np.where(np.isfinite(stacked), stacked, np.inf).min(axis=0)
    masked_hi = np.where(np.isfinite(stacked), stacked, -np.inf).max(axis=0)
    assert st.channel_min is not None and st.channel_max is not None
    np.testing.assert_array_equal(st.channel_min, masked_lo.astype(np.float64))
    np.testing.assert_array_equal(st.channel_max, masked_hi.astype(np.float64))


@pytest.mark.parametrize("q", [0.0, 0.0001, 0.01, 0.25, 0.5, 0.9, 0.999, 0.9999, 1.0])
def test_quantiles_within_one_bin_width(q: float) -> None:
    rng = np.random.default_rng(1)
    data = [
        rng.standard_normal(50_000).astype(np.float32),
        (rng.standard_t(3, 50_000) * 2).astype(np.float32),
        rng.uniform(-1, 9, 20_000).astype(np.float32),
    ]
    st = TensorStats()
    for d in data:
        st.update(d)
    allv = np.concatenate(data).astype(np.float64)
    assert abs(st.quantile(q) - np.quantile(allv, q)) <= st.bin_width


def test_merge_of_shards_equals_single_pass_exactly() -> None:
    batches = _batches(3)
    single = TensorStats()
    for b in batches:
        single.update(b)
    # shards in different groupings and orders
    for groups in ([[0, 1], [2, 3], [4, 5]], [[5], [0, 3], [1, 2, 4]], [[4, 2, 0], [1, 3, 5]]):
        shards = []
        for g in groups:
            s = TensorStats()
            for i in g:
                s.update(batches[i])
            shards.append(s)
        merged = TensorStats()
        for s in reversed(shards):
            merged.merge(s)
        assert merged == single
        np.testing.assert_array_equal(merged.counts, single.counts)
        assert (merged.k, merged.offset, merged.min, merged.max) == (
            single.k,
            single.offset,
            single.min,
            single.max,
        )


@settings(max_examples=60, deadline=None)
@given(
    hst.lists(
        hst.lists(
            hst.floats(-1e6, 1e6, allow_nan=False, width=32) | hst.just(float("nan")),
            min_size=0,
            max_size=20,
        ),
        min_size=1,
        max_size=6,
    ),
    hst.randoms(use_true_random=False),
)
def test_merge_is_order_independent(batches: list[list[float]], rnd: object) -> None:
    arrays = [np.array(b, dtype=np.float32) for b in batches]
    single = TensorStats()
    for a in arrays:
        single.update(a)
    order = list(range(len(arrays)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    merged = TensorStats()
    for i in order:
        s = TensorStats()
        s.update(arrays[i])
        merged.merge(s)
    assert merged.to_json()["bins"] == single.to_json()["bins"]
    assert (merged.count, merged.nonfinite, merged.k, merged.offset) == (
        single.count,
        single.nonfinite,
        single.k,
        single.offset,
    )
    fin = np.concatenate(arrays)
    fin = fin[np.isfinite(fin)]
    if fin.size:
        np.testing.assert_array_equal(
            single.counts, _oracle_counts(fin, single.k, single.offset, single.num_bins)
        )


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes(dtype: type[np.floating]) -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(10_000) * 5).astype(dtype)
    st = TensorStats()
    st.update(x)
    assert st.min == float(x.min()) and st.max == float(x.max())
    np.testing.assert_array_equal(st.counts, _oracle_counts(x, st.k, st.offset, st.num_bins))


def test_huge_and_tiny_values_bin_exactly() -> None:
    x = np.array([3e38, -3e38, 1e-30, -1e-30, 0.0], dtype=np.float32)
    st = TensorStats()
    st.update(x)
    np.testing.assert_array_equal(st.counts, _oracle_counts(x, st.k, st.offset, st.num_bins))
    y = np.full(100, 1234.5, dtype=np.float32)
    st2 = TensorStats()
    st2.update(y)
    assert st2.quantile(0.5) == 1234.5 and st2.count == 100


def test_all_nonfinite_and_empty() -> None:
    st = TensorStats()
    st.update(np.array([np.nan, np.inf], dtype=np.float32))
    st.update(np.zeros((0, 3), dtype=np.float32))
    assert (st.count, st.nonfinite) == (0, 2)
    other = TensorStats()
    other.update(np.array([1.0, 2.0], dtype=np.float32))
    st.merge(other)
    assert (st.count, st.nonfinite, st.min, st.max) == (2, 2, 1.0, 2.0)


def test_channel_mismatch_drops_per_channel() -> None:
    st = TensorStats()
    st.update(np.ones((2, 3), dtype=np.float32))
    st.update(np.ones((2, 4), dtype=np.float32))
    assert st.channel_mismatch and st.channel_min is None


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_save_load_round_trip_exact(tmp_path: object, suffix: str) -> None:
    from pathlib import Path

    st = TensorStats()
    for b in _batches(5):
        st.update(b)
    p = Path(str(tmp_path)) / f"s{suffix}"
    st.save(p)
    back = TensorStats.load(p)
    assert back == st
    np.testing.assert_array_equal(back.counts, st.counts)
    assert back.channel_min is not None and st.channel_min is not None
    np.testing.assert_array_equal(back.channel_min, st.channel_min)


def test_width_exponent_is_smallest_fitting() -> None:
    for lo, hi in [(-17.0, 25.0), (0.0, 0.0), (1e6, 1e6 + 1), (-1e-3, 2e-3), (-3e38, 3e38)]:
        k = width_exponent(lo, hi)
        assert math.floor(hi / 2.0**k) - math.floor(lo / 2.0**k) < NUM_BINS
        assert max(abs(lo), abs(hi)) < 2.0 ** (k + 24)
