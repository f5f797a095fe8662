"""Per-channel histograms of TensorStats (calib/channel_hist.py).

Oracles, written here from the definition: a channel's grid is the scalar ``width_exponent`` of
its final min/max with the window at the bin of its minimum; its counts are
``floor(v / 2**k) - offset`` of all its finite values at once (numpy ``floor`` of an exact
power-of-two scaling), whatever order and batching the data came in.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gelu_quant.calib import channel_hist as chist
from gelu_quant.calib import stats as stats_mod
from gelu_quant.calib.grid import width_exponent
from gelu_quant.calib.stats import TensorStats


def _data(seed: int, rows: int, c: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(-1.0, 2.0, size=(rows, c)).astype(np.float32)
    x[:, 3] *= 40.0  # a wide channel
    x[:, 5] = 1.25  # a constant channel
    x[rng.integers(0, rows, 5), 7] = rng.uniform(14, 25, 5).astype(np.float32)  # outliers
    return x


def _oracle(x: np.ndarray, bins: int = chist.CHANNEL_BINS) -> np.ndarray:
    c = x.shape[-1]
    flat = x.reshape(-1, c).astype(np.float64)
    out = np.zeros((c, bins), np.int64)
    for ch in range(c):
        v = flat[:, ch][np.isfinite(flat[:, ch])]
        k = width_exponent(float(v.min()), float(v.max()), bins)
        off = math.floor(math.ldexp(float(v.min()), -k))
        b = (np.floor(v * 2.0**-k) - off).astype(np.int64)
        assert b.min() >= 0 and b.max() < bins
        out[ch] = np.bincount(b, minlength=bins)
    return out


def test_vector_width_exponents_equal_the_scalar_one() -> None:
    rng = np.random.default_rng(0)
    lo = np.concatenate([-rng.lognormal(0, 4, 400), [0.0, -1e-30, 1.0, -3.0, 5e3]])
    hi = np.concatenate([rng.lognormal(0, 4, 400), [0.0, 1e-30, 1.0, -3.0, 5e3]])
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    for bins in (512, 4096):
        got = chist.width_exponents(lo, hi, bins)
        want = [width_exponent(float(a), float(b), bins) for a, b in zip(lo, hi, strict=True)]
        assert got.tolist() == want


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
def test_streamed_histograms_equal_one_pass_over_all_values(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "numpy":
        monkeypatch.setattr(stats_mod, "_kernel", None)
    elif stats_mod._kernel is None:
        pytest.skip("the C statistics kernel is not built")
    x = _data(1, 3000, 24)
    x[17, 2] = np.nan
    x[40, 9] = np.inf
    st = TensorStats()
    for a, b in ((0, 8), (8, 900), (900, 904), (904, 3000)):  # ranges grow between batches
        st.update(x[a:b].reshape(-1, 4, 24))
    assert st.channel_hist is not None
    assert np.array_equal(st.channel_hist, _oracle(x))
    assert st.channel_hist.sum() == st.count


def test_compiled_and_numpy_binning_agree() -> None:
    if stats_mod._kernel is None:
        pytest.skip("the C statistics kernel is not built")
    x = _data(2, 2000, 40).astype(np.float64)
    x[5, 1] = -np.inf
    cmin = np.where(np.isfinite(x), x, np.inf).min(axis=0)
    cmax = np.where(np.isfinite(x), x, -np.inf).max(axis=0)
    grids = chist.channel_grids(cmin, cmax)
    want = chist.bin_channels(x, grids, chist.CHANNEL_BINS)
    for dt in (np.float64, np.float32):
        xs = np.ascontiguousarray(x.astype(dt))
        g = chist.channel_grids(
            np.where(np.isfinite(xs), xs, np.inf).min(0).astype(np.float64),
            np.where(np.isfinite(xs), xs, -np.inf).max(0).astype(np.float64),
        )
        got = np.zeros((40, chist.CHANNEL_BINS), np.int64)
        out = stats_mod._kernel.channel_histograms(
            xs, dt == np.float64, 40, np.ldexp(1.0, -g[0]), g[1], got
        )
        assert out == 0
        ref = chist.bin_channels(xs, g, chist.CHANNEL_BINS)
        assert np.array_equal(got, ref)
    assert np.array_equal(want, chist.bin_channels(x, grids, chist.CHANNEL_BINS))


def test_shards_merge_exactly_in_any_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = _data(3, 2400, 16)
    whole = TensorStats()
    whole.update(x)
    shards = []
    for part in np.array_split(x, 4):
        s = TensorStats()
        s.update(part)
        shards.append(s)
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        m = TensorStats()
        for i in order:
            m.merge(shards[i])
        assert np.array_equal(m.channel_hist, whole.channel_hist)  # type: ignore[arg-type]
        assert m == whole
    # files keep them exactly
    for name in ("s.npz", "s.json"):
        whole.save(tmp_path / name)
        back = TensorStats.load(tmp_path / name)
        assert np.array_equal(back.channel_hist, whole.channel_hist)  # type: ignore[arg-type]


def test_merging_with_statistics_from_before_channel_histograms_drops_them() -> None:
    a, b = TensorStats(), TensorStats()
    a.update(_data(4, 100, 8))
    b.update(_data(5, 100, 8))
    b.channel_hist = None  # as read from an old file
    a.merge(b)
    assert a.channel_hist is None and a.channel_min is not None


def test_group_histogram_is_the_members_values_on_one_grid() -> None:
    x = _data(6, 4000, 12)
    st = TensorStats()
    for part in np.array_split(x, 3):
        st.update(part)
    assert st.channel_hist is not None and st.channel_min is not None
    assert st.channel_max is not None
    members = [0, 3, 7, 11]
    k, off, counts, lo, hi = chist.group_histogram(
        st.channel_hist, st.channel_min, st.channel_max, members
    )
    v = x[:, members].astype(np.float64).ravel()
    assert (lo, hi) == (float(v.min()), float(v.max()))
    b = (np.floor(v * 2.0**-k) - off).astype(np.int64)
    assert np.array_equal(counts, np.bincount(b, minlength=counts.size))
    assert counts.size <= chist.CHANNEL_BINS
    # no finer than the coarsest member's own grid, which the group's counts come from
    ks, _ = chist.channel_grids(st.channel_min[members], st.channel_max[members])
    assert k >= ks.max()
