"""Streaming accumulators against whole-array float64 oracles; the adaptive histogram."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import DataError
from gelu_quant.evaluate.histogram import AdaptiveHistogram
from gelu_quant.evaluate.metrics import ErrorAccumulator, OutputAccumulator, sample_cosines


def splits(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *[c % (n + 1) for c in cuts]})
    return list(itertools.pairwise(edges))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 100), max_size=5),
)
def test_streaming_equals_whole_array_oracle(seed: int, n: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(n, 3, 5)).astype(np.float32)
    c = (r + rng.normal(scale=0.1, size=r.shape)).astype(np.float32)
    acc = OutputAccumulator("y")
    for a, b in splits(n, cuts):
        acc.update(r[a:b], c[a:b])
    m = acc.result()
    r64, c64 = r.astype(np.float64), c.astype(np.float64)
    e = c64 - r64
    assert m.samples == n and m.errors.elements == r.size
    assert m.errors.max_abs_error == float(np.abs(e).max())
    assert m.errors.mean_abs_error == pytest.approx(math.fsum(np.abs(e).ravel()) / e.size, 1e-12)
    assert m.errors.rmse == pytest.approx(math.sqrt(math.fsum((e * e).ravel()) / e.size), 1e-12)
    sq = 10 * math.log10(math.fsum((r64 * r64).ravel()) / math.fsum((e * e).ravel()))
    assert m.errors.sqnr_db == pytest.approx(sq, rel=1e-10)
    cos = []
    for i in range(n):
        a, b = r64[i].ravel(), c64[i].ravel()
        cos.append(math.fsum(a * b) / math.sqrt(math.fsum(a * a) * math.fsum(b * b)))
    assert m.cosine_mean == pytest.approx(sum(cos) / n, rel=1e-12)
    assert m.cosine_min == pytest.approx(min(cos), rel=1e-12)


def test_classification_metrics_with_labels() -> None:
    r = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 5.0], [0.5, 0.0, 0.0]])
    c = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 5.0], [0.0, 0.5, 0.0]])
    labels = np.array([0, 1, 2, 0])
    acc = OutputAccumulator("logits", "classification")
    acc.update(r[:3], c[:3], labels[:3])
    acc.update(r[3:], c[3:], labels[3:])
    m = acc.result()
    assert m.top1_agreement == 0.5
    assert m.accuracy_reference == 1.0 and m.accuracy_candidate == 0.5
    assert m.accuracy_drop == pytest.approx(50.0)
    kl = 0.0
    for a, b in zip(r, c, strict=True):
        p = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
        q = [math.exp(v) / sum(math.exp(u) for u in b) for v in b]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert m.kl_divergence == pytest.approx(kl / 4, rel=1e-12)
    with pytest.raises(DataError, match="2 labels for a batch of 3"):
        acc.update(r[:3], c[:3], labels[:2])


def test_cosine_edge_cases_and_exact_errors() -> None:
    z = np.zeros((3, 2))
    one = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    other = np.array([[0.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    assert sample_cosines(z, z).tolist() == [1.0, 1.0, 1.0]
    assert sample_cosines(one, other).tolist() == [1.0, 0.0, -1.0]
    e = ErrorAccumulator()
    e.update(np.ones(4), np.ones(4))
    s = e.result()
    assert s.sqnr_db == math.inf and s.max_abs_error == 0.0
    e.update(np.array([np.nan, 1.0]), np.array([1.0, np.inf]))
    assert e.result().nonfinite == 2 and e.result().elements == 4
    with pytest.raises(DataError, match="differ in shape"):
        e.update(np.ones(3), np.ones(4))


def test_adaptive_histogram_doubling_is_exact() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3.0, size=5000)
    x[10] = 37.0
    h = AdaptiveHistogram(bins=64, half_range=1.0, track_max=True)
    for part in np.array_split(x, 7):
        h.update(part, np.abs(part))
    assert h.half_range == 64.0 and h.total == x.size
    edges = np.linspace(-64.0, 64.0, 65)
    counts, _ = np.histogram(x, bins=edges)
    assert h.counts.tolist() == counts.tolist()
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 63)
    want = np.zeros(64)
    np.maximum.at(want, idx, np.abs(x))
    assert h.max_value is not None and h.max_value.tolist() == want.tolist()
    assert h.min_seen == x.min() and h.max_seen == 37.0


def test_masked_update_compares_real_tokens_only() -> None:
    rng = np.random.default_rng(4)
    r = rng.standard_normal((2, 5, 4))
    c = r + 0.01 * rng.standard_normal(r.shape)
    c[0, 3:] = 50.0  # padding positions: garbage that must not count
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    acc = OutputAccumulator("h")
    acc.update(r, c, mask=mask)
    m = acc.result()
    # oracle: each sample's cosine over its real tokens only, the errors over real tokens
    want = []
    for i in range(2):
        a, b = r[i][mask[i]].ravel(), c[i][mask[i]].ravel()
        want.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert m.samples == 2
    assert m.cosine_min == pytest.approx(min(want), rel=1e-12)
    assert m.cosine_mean == pytest.approx(np.mean(want), rel=1e-12)
    assert m.errors.elements == 8 * 4
    assert m.errors.max_abs_error == pytest.approx(np.abs(r[mask] - c[mask]).max(), rel=1e-12)
