"""The ulp-distance helper against distances counted by hand and with numpy.nextafter."""

from __future__ import annotations

import numpy as np
import pytest
from _ulp import FAR, assert_within_ulps, step_ulps, ulp_distance


@pytest.mark.parametrize("dt", [np.float16, np.float32])
def test_neighbours_are_one_apart_across_zero_and_binades(dt) -> None:
    one, tiny = dt(1.0), np.finfo(dt).smallest_subnormal
    big = np.finfo(dt).max
    assert ulp_distance(one, np.nextafter(one, dt(2))) == 1
    assert ulp_distance(one, np.nextafter(one, dt(0))) == 1  # across the binade below 1
    assert ulp_distance(tiny, -tiny) == 2  # -tiny, 0, tiny
    assert ulp_distance(dt(0.0), dt(-0.0)) == 0
    x = dt(1.5)
    for _ in range(7):
        x = np.nextafter(x, dt(-3))
    assert ulp_distance(x, dt(1.5)) == 7
    assert ulp_distance(big, -big) == 2 * int(ulp_distance(big, dt(0)))


def test_nan_and_infinities() -> None:
    a = np.array([np.nan, np.nan, 1.0, np.inf, np.inf, 65504.0, -np.inf], np.float16)
    b = np.array([np.nan, 1.0, np.nan, np.inf, 65504.0, np.inf, -np.inf], np.float16)
    assert ulp_distance(a, b).tolist() == [0, FAR, FAR, 0, FAR, FAR, 0]


def test_step_matches_nextafter() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, 1000).astype(np.float32)
    up = step_ulps(x, 3)
    want = x
    for _ in range(3):
        want = np.nextafter(want, np.float32(np.inf))
    assert np.array_equal(up, want)
    assert ulp_distance(step_ulps(x, -5), x).max() == 5
    h = np.array([65504.0, -65504.0, np.nan, 0.0], np.float16)
    assert np.array_equal(step_ulps(h, 1)[:2], np.array([np.inf, -65504.0 + 32], np.float16))
    assert np.isnan(step_ulps(h, 1)[2]) and step_ulps(h, -1)[3] == -np.float16(2.0**-24)


def test_assert_within_ulps_names_the_worst() -> None:
    a = np.array([1.0, 2.0, 3.0], np.float32)
    assert_within_ulps(step_ulps(a, 2), a, 2)
    with pytest.raises(AssertionError, match=r"1 of 3 .* 4 ulps at x=2"):
        assert_within_ulps(np.array([1.0, 2.0, step_ulps(a, 4)[2]], np.float32), a, 3, x=[0, 1, 2])
    with pytest.raises(AssertionError, match="NaN/inf"):
        assert_within_ulps(np.array([np.nan], np.float32), np.array([1.0], np.float32), 10)
    with pytest.raises(TypeError):
        ulp_distance(np.float16(1), np.float32(1))
    with pytest.raises(TypeError):
        ulp_distance(np.float64(1), np.float64(1))
