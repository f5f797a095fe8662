"""Reference GELU numerics in float64.

These are the ground truth every approximation is scored against. They use
``math.erf`` / ``math.tanh`` through numpy's vectorised float64 functions; the
exact form is ``x * Phi(x)`` with ``Phi`` the standard normal CDF.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

GeluForm = Literal["exact", "tanh"]
GELU_FORMS: tuple[GeluForm, ...] = ("exact", "tanh")

#: Location and value of GELU's minimum (exact form), to float64 precision.
GELU_ARGMIN = -0.7517915246935645
GELU_MIN = -0.16997120747990369

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_COEF = 0.044715

FloatArray = npt.NDArray[np.float64]

_erfc = np.frompyfunc(math.erfc, 1, 1)


def normal_cdf(x: npt.ArrayLike) -> FloatArray:
    """Standard normal CDF in float64, accurate in both tails (uses erfc)."""
    a = np.asarray(x, dtype=np.float64)
    # Phi(x) = erfc(-x / sqrt2) / 2 keeps full relative accuracy for x << 0.
    return np.asarray(_erfc(-a / _SQRT2), dtype=np.float64) * 0.5


def gelu_exact(x: npt.ArrayLike) -> FloatArray:
    """Exact GELU ``x * Phi(x)`` in float64."""
    a = np.asarray(x, dtype=np.float64)
    return np.asarray(a * normal_cdf(a), dtype=np.float64)


def gelu_tanh(x: npt.ArrayLike) -> FloatArray:
    """The tanh form ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` in float64."""
    a = np.asarray(x, dtype=np.float64)
    inner = _SQRT_2_OVER_PI * (a + _TANH_COEF * a * a * a)
    return np.asarray(0.5 * a * (1.0 + np.tanh(inner)), dtype=np.float64)


def quick_gelu(x: npt.ArrayLike, alpha: float = 1.702) -> FloatArray:
    """QuickGELU ``x * sigmoid(alpha x)`` in float64."""
    a = np.asarray(x, dtype=np.float64)
    # sigmoid via exp of a non-positive argument only: no overflow warnings.
    z = alpha * a
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return np.asarray(a * sig, dtype=np.float64)


def gelu(x: npt.ArrayLike, form: GeluForm = "exact") -> FloatArray:
    """GELU of the given form in float64."""
    if form == "exact":
        return gelu_exact(x)
    if form == "tanh":
        return gelu_tanh(x)
    raise ValueError(f"unknown GELU form {form!r}; expected one of {GELU_FORMS}")


def gelu_output_range(lo: float, hi: float, form: GeluForm = "exact") -> tuple[float, float]:
    """Exact output range of GELU over the input interval ``[lo, hi]``.

    GELU decreases on ``(-inf, argmin]`` and increases after, so the minimum is at
    the argmin when it lies inside the interval, otherwise at an end point.
    """
    if not lo <= hi:
        raise ValueError(f"empty interval [{lo}, {hi}]")
    ends = gelu(np.array([lo, hi]), form)
    out_lo = float(min(ends))
    if lo <= GELU_ARGMIN <= hi:
        out_lo = min(out_lo, float(gelu(np.array([GELU_ARGMIN]), form)[0]))
        if form != "exact":  # the tanh form's minimum sits a little apart: search near it
            near = np.linspace(max(lo, GELU_ARGMIN - 0.05), min(hi, GELU_ARGMIN + 0.05), 20001)
            out_lo = min(out_lo, float(gelu(near, form).min()))
    return out_lo, float(max(ends))
