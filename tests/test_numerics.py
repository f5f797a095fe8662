"""Reference GELU numerics against independent scalar formulas (Python's math module)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gelu_quant.numerics import (
    GELU_ARGMIN,
    GELU_MIN,
    gelu,
    gelu_exact,
    gelu_output_range,
    gelu_tanh,
    quick_gelu,
)

XS = [-40.0, -12.5, -8.0, -5.0, -3.3, -1.0, -0.7518, -1e-3, -1e-30, 0.0, 1e-30, 0.3, 1.0, 4.0, 9.0]


def oracle_exact(x: float) -> float:
    # erfc form keeps relative accuracy in the negative tail; erf form for x >= 0
    if x < 0:
        return x * 0.5 * math.erfc(-x / math.sqrt(2.0))
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def oracle_tanh(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("x", XS)
def test_exact_matches_scalar_formula(x: float) -> None:
    got = float(gelu_exact(np.array([x]))[0])
    assert got == pytest.approx(oracle_exact(x), rel=1e-15, abs=1e-300)


@pytest.mark.parametrize("x", XS)
def test_tanh_matches_scalar_formula(x: float) -> None:
    assert float(gelu_tanh(np.array([x]))[0]) == pytest.approx(oracle_tanh(x), rel=1e-14)


def test_quick_gelu() -> None:
    for x in XS:
        want = x / (1.0 + math.exp(-1.702 * x)) if x > -700 / 1.702 else 0.0
        assert float(quick_gelu(np.array([x]))[0]) == pytest.approx(want, rel=1e-14, abs=1e-300)


def test_minimum_is_where_the_derivative_vanishes() -> None:
    # d/dx x Phi(x) = Phi(x) + x phi(x)
    x = GELU_ARGMIN
    d = 0.5 * math.erfc(-x / math.sqrt(2)) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    assert abs(d) < 1e-15
    assert oracle_exact(x) == pytest.approx(GELU_MIN, rel=1e-15)
    grid = np.linspace(-3, 3, 600_001)
    assert gelu_exact(grid).min() >= GELU_MIN - 1e-16


def test_output_range() -> None:
    assert gelu_output_range(-8, 8) == pytest.approx((GELU_MIN, 8.0))
    lo, hi = gelu_output_range(-0.5, 2.0)
    assert lo == pytest.approx(oracle_exact(-0.5)) and hi == pytest.approx(oracle_exact(2.0))
    lo, hi = gelu_output_range(-5.0, -3.0)  # decreasing part only
    assert lo == pytest.approx(oracle_exact(-3.0)) and hi == pytest.approx(oracle_exact(-5.0))
    with pytest.raises(ValueError):
        gelu_output_range(1.0, 0.0)


def test_unknown_form() -> None:
    with pytest.raises(ValueError):
        gelu(np.zeros(2), "erf")  # type: ignore[arg-type]
