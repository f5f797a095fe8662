"""Reference GELU numerics in float64.

These are the ground truth every approximation is scored against. They use
``math.erf`` / ``math.tanh`` through numpy's vectorised float64 functions; the
exact form is ``x * Phi(x)`` with ``Phi`` the standard normal CDF.

Three *forms* are first-class: ``exact`` (``x Phi(x)``), ``tanh`` (the tanh approximation that
GPT-2-style models compute) and ``quick`` (QuickGELU ``x sigmoid(1.702 x)``, CLIP's activation).
Every table, interpolated table and polynomial approximates one of them and is scored against
it. QuickGELU is supported with alpha 1.702 only (:data:`QUICK_ALPHA`); other alphas are other
functions (1.0 is SiLU) and are refused where a site carries one.

:func:`form_argmin` and :func:`tail_bounds` are computed from the float64 references (nothing is
hard-coded): where each form has its minimum, and beyond which points GELU of that form rounds
to 0 (below) and to ``x`` (above) in float16 / float32.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import numpy.typing as npt

GeluForm = Literal["exact", "tanh", "quick"]
GELU_FORMS: tuple[GeluForm, ...] = ("exact", "tanh", "quick")

#: QuickGELU's alpha: the only one the quick form takes.
QUICK_ALPHA = 1.702

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
    # 1 + tanh(w) cancels for w << 0; there it is 2 e^{2w} / (1 + e^{2w}), accurate
    e = np.exp(2.0 * np.minimum(inner, 0.0))
    neg = 0.5 * a * (2.0 * e / (1.0 + e))
    return np.asarray(np.where(inner >= 0, 0.5 * a * (1.0 + np.tanh(inner)), neg), np.float64)


def quick_gelu(x: npt.ArrayLike, alpha: float = 1.702) -> FloatArray:
    """QuickGELU ``x * sigmoid(alpha x)`` in float64."""
    a = np.asarray(x, dtype=np.float64)
    # sigmoid via exp of a non-positive argument only: no overflow warnings.
    z = alpha * a
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return np.asarray(a * sig, dtype=np.float64)


def gelu(x: npt.ArrayLike, form: GeluForm = "exact") -> FloatArray:
    """GELU of the given form in float64 (``quick``: QuickGELU with alpha 1.702)."""
    if form == "exact":
        return gelu_exact(x)
    if form == "tanh":
        return gelu_tanh(x)
    if form == "quick":
        return quick_gelu(x, QUICK_ALPHA)
    raise ValueError(f"unknown GELU form {form!r}; expected one of {GELU_FORMS}")


@functools.cache
def form_argmin(form: GeluForm) -> tuple[float, float]:
    """``(argmin, min)`` of GELU of ``form``, to float64 precision (golden-section search on
    ``[-3, 0]``, where each form has its single minimum): exact -0.75179, -0.169971; tanh
    -0.75246, -0.170041; quick -0.75115, -0.163610 (QuickGELU's lobe is shallower)."""
    if form == "exact":
        return GELU_ARGMIN, GELU_MIN
    a, b = -3.0, 0.0
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(200):
        c, d = b - invphi * (b - a), a + invphi * (b - a)
        if float(gelu(np.array([c]), form)[0]) < float(gelu(np.array([d]), form)[0]):
            b = d
        else:
            a = c
        if b - a < 1e-15:
            break
    xm = 0.5 * (a + b)
    return xm, float(gelu(np.array([xm]), form)[0])


def gelu_output_range(lo: float, hi: float, form: GeluForm = "exact") -> tuple[float, float]:
    """Exact output range of GELU over the input interval ``[lo, hi]``.

    GELU decreases on ``(-inf, argmin]`` and increases after, so the minimum is at
    the argmin when it lies inside the interval, otherwise at an end point.
    """
    if not lo <= hi:
        raise ValueError(f"empty interval [{lo}, {hi}]")
    ends = gelu(np.array([lo, hi]), form)
    out_lo = float(min(ends))
    xm, ym = form_argmin(form)
    if lo <= xm <= hi:
        out_lo = min(out_lo, ym)
    return out_lo, float(max(ends))


_FLOAT_NP: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}
_UINT: dict[str, type[np.unsignedinteger]] = {"float16": np.uint16, "float32": np.uint32}


def _floats_between(a: float, b: float, dtype: str) -> npt.NDArray[np.float64]:
    """Every ``dtype`` value in ``[a, b]`` (same sign, ascending), as float64."""
    d, u = _FLOAT_NP[dtype], _UINT[dtype]
    ba, bb = (int(np.array(v, dtype=d).view(u)) for v in (d(abs(a)), d(abs(b))))
    lo, hi = min(ba, bb), max(ba, bb)
    v = np.arange(lo, hi + 1, dtype=np.uint64).astype(u).view(d).astype(np.float64)
    return np.sort(v if a >= 0 else -v)


@functools.cache
def tail_bounds(form: GeluForm, dtype: str) -> tuple[float, float]:
    """``(zero_below, identity_above)``: the ``dtype`` values ``L < 0 < H`` such that for
    every ``dtype`` input ``x < L`` GELU of ``form`` rounds to 0 in ``dtype`` (``|GELU(x)|`` at
    most half the smallest subnormal, round to nearest even), and for every ``x > H`` it rounds
    to ``x``. Computed from the float64 reference over every ``dtype`` value near the crossing
    (float16: about -5.6 / 3.4 for the exact form; float32: about -14.3 / 5.4; QuickGELU decays
    like ``x e^{1.702 x}``, so much further below: about -11.7 and -63).

    A polynomial fitted on ``[L, H]`` with tails 0 below and ``x`` above is exact in its
    tails; a narrower fitted domain is not.
    """
    if form not in GELU_FORMS:
        raise ValueError(f"unknown GELU form {form!r}; expected one of {GELU_FORMS}")
    d = _FLOAT_NP[dtype]
    half_tiny = float(np.finfo(d).smallest_subnormal) / 2.0

    def zero_ok(x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.asarray(gelu(x, form).astype(d) == 0, dtype=bool) & (
            np.abs(gelu(x, form)) <= half_tiny
        )

    def ident_ok(x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.asarray(gelu(x, form).astype(d).astype(np.float64) == x, dtype=bool)

    # coarse bracket on a float64 grid (both conditions are monotone far enough out), then
    # every dtype value of the bracket, so the bound is the exact last failing value
    coarse = -np.geomspace(1.0, 200.0, 4001).astype(d).astype(np.float64)
    ok = zero_ok(coarse)
    i = int(np.argmax(ok))  # first (smallest |x|) grid point that rounds to 0
    lo_x = _floats_between(coarse[i + 20], coarse[max(i - 20, 0)], dtype)
    bad = lo_x[~zero_ok(lo_x)]
    zero_below = float(d(bad.min())) if bad.size else float(lo_x.min())
    coarse_p = -coarse
    okp = ident_ok(coarse_p)
    j = int(np.argmax(okp))
    hi_x = _floats_between(coarse_p[max(j - 20, 0)], coarse_p[j + 20], dtype)
    badp = hi_x[~ident_ok(hi_x)]
    ident_above = float(d(badp.max())) if badp.size else float(hi_x.min())
    return zero_below, ident_above
