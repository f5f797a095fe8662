"""Distances in units in the last place, for tests that compare results of library
transcendental functions (exp, tanh, erf, ...) within a stated bound instead of bit for bit.

A float's *ordinal* is its bit pattern read as a sign-magnitude integer and turned into two's
complement, so consecutive floats have consecutive ordinals (-0 and +0 share ordinal 0, and the
largest finite float and infinity are neighbours). The distance of two floats is the difference
of their ordinals: the number of representable values between them, crossing zero and binade
boundaries correctly. NaN is at distance 0 from NaN and infinitely far from anything else; an
infinity is at distance 0 only from itself (a finite value next to infinity does not count as
close).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

_UINT = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32}

#: the distance reported for NaN against a number, or an infinity against anything else
FAR = np.iinfo(np.int64).max


def ordinals(a: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Consecutive integers for consecutive floats of ``a``'s dtype (float16 or float32)."""
    arr = np.asarray(a)
    if arr.dtype not in _UINT:
        raise TypeError(f"ulp distances need float16 or float32, got {arr.dtype}")
    bits = arr.itemsize * 8
    w = arr.view(_UINT[arr.dtype]).astype(np.int64)
    mag, neg = w & ((1 << (bits - 1)) - 1), (w >> (bits - 1)).astype(bool)
    return np.where(neg, -mag, mag)


def ulp_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Elementwise distance of ``a`` and ``b`` (same float dtype) in ulps of that dtype."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype:
        raise TypeError(f"compare in one dtype: {a.dtype} vs {b.dtype}")
    a, b = np.broadcast_arrays(a, b)
    d = np.abs(ordinals(a) - ordinals(b))
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    inf_mismatch = (np.isinf(a) | np.isinf(b)) & (a != b)
    d = np.where(nan_a | nan_b | inf_mismatch, FAR, d)
    return np.where(nan_a & nan_b, 0, d)


def step_ulps(a: npt.ArrayLike, k: int) -> npt.NDArray[Any]:
    """``a`` moved by ``k`` ulps (towards +inf for k > 0), stopping at +-inf; NaN stays NaN."""
    arr = np.asarray(a)
    o = ordinals(arr) + k
    top = int(ordinals(np.array(np.inf, arr.dtype)))
    o = np.clip(o, -top, top)
    bits = arr.itemsize * 8
    mag = np.abs(o).astype(_UINT[arr.dtype])
    sign = np.where(o < 0, 1, 0).astype(_UINT[arr.dtype]) << _UINT[arr.dtype](bits - 1)
    out = (mag | sign).view(arr.dtype)
    return np.where(np.isnan(arr), arr, out)


def assert_within_ulps(
    got: npt.ArrayLike, want: npt.ArrayLike, max_ulps: int, x: npt.ArrayLike | None = None
) -> None:
    """Every element of ``got`` within ``max_ulps`` of ``want`` (NaN for NaN, infinities
    exactly); the message names the worst element (and its input ``x`` when given)."""
    d = ulp_distance(got, want)
    if d.size == 0 or int(d.max()) <= max_ulps:
        return
    i = int(np.argmax(d))
    g, w = np.ravel(np.asarray(got))[i].item(), np.ravel(np.asarray(want))[i].item()
    at = "" if x is None else f" at x={np.ravel(np.asarray(x))[i].item()!r}"
    far = "(NaN/inf mismatch)" if d.flat[i] == FAR else f"{int(d.flat[i])} ulps"
    raise AssertionError(
        f"{int(np.sum(d > max_ulps))} of {d.size} values more than {max_ulps} ulps apart; "
        f"worst {far}{at}: got {g!r}, want {w!r}"
    )
