"""Non-uniform piecewise-linear tables (PWL) for small lookup units, in integer arithmetic.

A small lookup unit holds ``S`` segments (8, 16, 32 or 64) with their own breakpoints on the input
code axis. GELU is ~0 below -4 and ~x above 3, so uniform knots (:mod:`gelu_quant.lut.interp`)
waste almost every segment on a wide calibrated range; here the breakpoints are placed where the
curve bends. Arithmetic, for an input code ``q`` (int8/uint8/int16), all in int32::

    k   = the largest k with starts[k] <= q              (starts[0] = in.qmin, ascending)
    d   = q - starts[k]                                   0 <= d < 2**bits (bits = 8 or 16)
    acc = bases[k] + d * slopes[k]                        int32, never overflows (checked)
    y   = clip(acc >> shift, out.qmin, out.qmax)          arithmetic shift = floor(acc / 2**shift)

``bases[k]`` and ``slopes[k]`` are the segment's line in output codes with ``shift`` fraction
bits (``0 <= shift <= 24``); ``bases`` already hold the rounding half, ``2**(shift - 1)``, so
``acc >> shift`` rounds the line half up. The spec checks at construction that for every code of
every segment ``|d * slopes[k]|``, ``|bases[k]|`` and ``|acc|`` stay below ``2**31``: numpy,
the ONNX body and the C kernel compute the same int32 values with no wrap-around.

Fitting (:func:`build_pwl_lut`) targets the full 256-entry table ``T`` of the same qparams
(:func:`gelu_quant.lut.table.build_lut`), on every input code:

1. breakpoints minimise the largest Chebyshev error ``max |line(q) - T(q)|`` over all segments:
   a bisection on that error, each step a greedy partition (each segment extended as far as a
   line within the error exists -- the feasible lines form a convex polygon in (base, slope),
   clipped by two half-planes per code). Greedy partitions with a bound use the fewest
   segments, so the bisection finds the optimal breakpoints for this objective;
2. refinement: segments the partition did not need are spent by splitting the worst segment at
   its best point; each segment's line is its own Chebyshev (minimax) line against ``T``;
3. the lines are rounded to fixed point with the largest ``shift`` (at most 16) that keeps the
   int32 bounds.

A line within 0.5 of ``T`` on a segment reproduces the table there exactly; within 1.5, to one
output step. For int16 input (65536 codes) step 1 runs on every 256th code and the lines are
fitted on every code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.lut.table import build_lut, gelu_output_qparams
from gelu_quant.numerics import GELU_FORMS, GeluForm
from gelu_quant.qparams import QDType, QParams

PWL_SIZES = (8, 16, 32, 64)
"""Segment counts the builder and the converter targets offer."""
MAX_SEGMENTS = 256
"""Largest segment count a spec may hold."""
MAX_SHIFT = 24
"""Largest number of fraction bits a spec may hold."""
DEFAULT_SHIFT = 16
"""Fraction bits the builder uses when the int32 bounds allow it."""
_INT32_MAX = 2**31 - 1
_PWL_DTYPES = ("int8", "uint8", "int16")


@register_spec
@dataclass(frozen=True, eq=False)
class PwlLutSpec(GeluApprox):
    """``S`` segments with their own breakpoints and integer linear interpolation."""

    kind = "pwl_lut"

    in_qparams: QParams
    out_qparams: QParams
    form: GeluForm
    starts: npt.NDArray[np.int32] = field(repr=False)
    """First input code of each segment (int32, ascending, ``starts[0] == in.qmin``)."""
    bases: npt.NDArray[np.int32] = field(repr=False)
    """Line value at ``starts[k]`` in output codes, ``shift`` fraction bits, rounding half added."""
    slopes: npt.NDArray[np.int32] = field(repr=False)
    """Slope in output codes per input code, ``shift`` fraction bits."""
    shift: int = 16

    def __post_init__(self) -> None:
        qi, qo = self.in_qparams, self.out_qparams
        if qi.dtype not in _PWL_DTYPES or qo.dtype not in _PWL_DTYPES:
            raise SpecError(
                f"PWL tables take int8, uint8 or int16 codes, not {qi.dtype} -> {qo.dtype}"
            )
        if qi.code_bits is not None or qo.code_bits is not None:
            raise SpecError("PWL tables take full-width codes (no low-bit qparams)")
        for name in ("starts", "bases", "slopes"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.int32 or a.ndim != 1:
                raise SpecError(f"{name} must be a 1-D int32 array")
        s = self.starts.size
        if not 1 <= s <= MAX_SEGMENTS:
            raise SpecError(f"{s} segments: need 1 to {MAX_SEGMENTS}")
        if self.bases.size != s or self.slopes.size != s:
            raise SpecError(
                f"starts, bases and slopes need one entry per segment ({s}, "
                f"{self.bases.size}, {self.slopes.size})"
            )
        if isinstance(self.shift, bool) or not isinstance(self.shift, int):
            raise SpecError(f"shift must be an integer, got {self.shift!r}")
        if not 0 <= self.shift <= MAX_SHIFT:
            raise SpecError(f"shift {self.shift}: need 0 to {MAX_SHIFT}")
        st = self.starts.astype(np.int64)
        if st[0] != qi.qmin or np.any(np.diff(st) <= 0) or st[-1] > qi.qmax:
            raise SpecError(
                f"starts must begin at the input's qmin ({qi.qmin}), ascend strictly and stay "
                f"<= qmax ({qi.qmax})"
            )
        last = np.append(st[1:], qi.qmax + 1) - st - 1  # largest d of each segment
        b, m = self.bases.astype(np.int64), self.slopes.astype(np.int64)
        worst = np.max(np.abs(np.stack([b, b + last * m, last * m])))
        if worst > _INT32_MAX:
            raise SpecError(
                "the int32 accumulator would overflow (|base|, |d*slope| or |base + d*slope| "
                f"reaches {int(worst)} >= 2**31); use fewer fraction bits (shift)"
            )
        for a in (self.starts, self.bases, self.slopes):
            a.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PwlLutSpec)
            and self.in_qparams == other.in_qparams
            and self.out_qparams == other.out_qparams
            and self.form == other.form
            and self.shift == other.shift
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.bases, other.bases)
            and np.array_equal(self.slopes, other.slopes)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def segments(self) -> int:
        return int(self.starts.size)

    @property
    def domain(self) -> tuple[float, float]:
        return self.in_qparams.real_range

    def segment_of(self, codes: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """Segment index ``k`` of each input code (the largest k with ``starts[k] <= q``)."""
        q = np.asarray(codes).astype(np.int32)
        return (np.searchsorted(self.starts, q, side="right") - 1).astype(np.int32)

    def lookup(self, codes: npt.ArrayLike) -> npt.NDArray[Any]:
        """Input codes to output codes, exactly as the module docstring states."""
        q = np.asarray(codes)
        if q.dtype != self.in_qparams.np_dtype:
            raise SpecError(f"input codes must be {self.in_qparams.dtype}, got {q.dtype}")
        k = self.segment_of(q)
        d = q.astype(np.int32) - self.starts[k]
        acc = self.bases[k] + d * self.slopes[k]  # int32; bounds checked in __post_init__
        y = np.right_shift(acc, np.int32(self.shift))  # arithmetic: floor division
        y = np.clip(y, self.out_qparams.qmin, self.out_qparams.qmax)
        return cast(npt.NDArray[Any], y.astype(self.out_qparams.np_dtype))

    def full_table(self) -> npt.NDArray[Any]:
        """The equivalent full table (output code of every input code, ascending)."""
        return self.lookup(self.in_qparams.codes())

    def output_values(self) -> npt.NDArray[np.float64]:
        """Real value of the output for every input code, float64."""
        return self.out_qparams.dequantize(self.full_table(), np.float64).astype(np.float64)

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        codes = self.in_qparams.quantize(x)
        return self.out_qparams.dequantize(self.lookup(codes), np.float32)

    def payload(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "in_qparams": self.in_qparams.to_json(),
            "out_qparams": self.out_qparams.to_json(),
            "shift": int(self.shift),
            "starts": [int(v) for v in self.starts],
            "bases": [int(v) for v in self.bases],
            "slopes": [int(v) for v in self.slopes],
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> PwlLutSpec:
        return cls(
            in_qparams=QParams.from_json(d["in_qparams"]),
            out_qparams=QParams.from_json(d["out_qparams"]),
            form=d["form"],
            starts=np.array(d["starts"], dtype=np.int32),
            bases=np.array(d["bases"], dtype=np.int32),
            slopes=np.array(d["slopes"], dtype=np.int32),
            shift=int(d["shift"]),
        )

    def summary(self) -> str:
        lo, hi = self.domain
        olo, ohi = self.out_qparams.real_range
        return (
            f"pwl_lut: {self.form} GELU, {self.in_qparams.dtype} in [{lo:.6g}, {hi:.6g}] -> "
            f"{self.out_qparams.dtype} [{olo:.6g}, {ohi:.6g}], {self.segments} segments "
            f"(non-uniform breakpoints, int32 lines with {self.shift} fraction bits)"
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {"starts": self.starts, "bases": self.bases, "slopes": self.slopes}


# -- fitting --------------------------------------------------------------------------------------
_Poly = list[tuple[float, float]]
_EPS = 1e-12


def _clip(poly: _Poly, d: float, c: float, sign: float) -> _Poly:
    """Clip a convex polygon in (base, slope) to ``sign * (base + slope * d - c) <= 0``
    (Sutherland-Hodgman); near-repeated vertices are dropped once there are many."""
    out: _Poly = []
    prev = poly[-1]
    f_prev = sign * (prev[0] + prev[1] * d - c)
    for p in poly:
        f = sign * (p[0] + p[1] * d - c)
        if (f_prev <= 0.0) != (f <= 0.0):
            t = f_prev / (f_prev - f)
            out.append((prev[0] + t * (p[0] - prev[0]), prev[1] + t * (p[1] - prev[1])))
        if f <= 0.0:
            out.append(p)
        prev, f_prev = p, f
    if len(out) > 8:
        tol = _EPS * (1.0 + abs(c))
        out = [
            v
            for j, v in enumerate(out)
            if abs(v[0] - out[j - 1][0]) + abs(v[1] - out[j - 1][1]) * (1.0 + d) > tol
        ] or out[:1]
    return out


def _extend(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], i: int, e: float, span: float
) -> int:
    """The end (exclusive) of the longest run from ``i`` that one line fits within ``e``
    (``span``: ``max(y) - min(y)``)."""
    # a feasible line's slope is at most the data's span (+2e) per code: codes are >= 1 apart
    big = span + 2.0 * e + 1.0
    y0 = float(y[i])
    poly: _Poly = [(y0 - e, -big), (y0 + e, -big), (y0 + e, big), (y0 - e, big)]
    j = i + 1
    while j < x.size:
        d = float(x[j] - x[i])
        nxt = _clip(poly, d, float(y[j]) + e, 1.0)
        nxt = _clip(nxt, d, float(y[j]) - e, -1.0) if nxt else nxt
        if not nxt:
            break
        poly = nxt
        j += 1
    return j


def _greedy(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], e: float, limit: int
) -> list[int] | None:
    """Segment starts (indices) of the greedy partition within ``e``; None past ``limit``."""
    starts: list[int] = []
    i = 0
    span = float(np.max(y) - np.min(y))
    while i < x.size:
        if len(starts) == limit:
            return None
        starts.append(i)
        i = _extend(x, y, i, e, span)
    return starts


def chebyshev_line(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, float, float]:
    """The minimax line through points ``(x, y)``: ``(slope, value at x[0], max error)``.

    The vertical width ``max(y - m·x) - min(y - m·x)`` is convex in the slope ``m`` and its
    minimum lies between the smallest and largest slope of neighbouring points: a grid of 33
    slopes narrowed around its best point (16x per round, to float64 precision); the line runs
    halfway between the extremes.
    """
    d = x - x[0]
    if x.size <= 2:
        m0 = 0.0 if x.size == 1 else float((y[1] - y[0]) / d[1])
        return m0, float(y[0]), 0.0
    steps = np.diff(y) / np.diff(d)
    a, b = float(np.min(steps)), float(np.max(steps))
    m = a
    while b > a:
        grid = np.linspace(a, b, 33)
        r = y[None, :] - grid[:, None] * d[None, :]
        i = int(np.argmin(r.max(axis=1) - r.min(axis=1)))
        m = float(grid[i])
        na, nb = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, 32)])
        if nb - na <= 1e-13 * max(1.0, abs(na), abs(nb)) or (na, nb) == (a, b):
            break
        a, b = na, nb
    r1 = y - m * d
    top, bot = float(np.max(r1)), float(np.min(r1))
    return m, 0.5 * (top + bot), 0.5 * (top - bot)


def optimal_breakpoints(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], segments: int
) -> list[int]:
    """Indices where the segments start, minimising the largest Chebyshev error (see module)."""
    n = int(x.size)
    if segments >= n:
        return list(range(n))
    lo, hi = 0.0, chebyshev_line(x, y)[2] + 1e-6
    best = _greedy(x, y, hi, segments)
    assert best is not None
    for _ in range(60):
        if hi - lo <= 1e-7:
            break
        mid = 0.5 * (lo + hi)
        got = _greedy(x, y, mid, segments)
        if got is None:
            lo = mid
        else:
            hi, best = mid, got
    return best


def _best_cut(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], a: int, b: int) -> int:
    """Where to split ``[a, b)`` in two: the left part's error grows with the cut, the right
    part's shrinks; binary search for the crossing of the two."""
    lo, hi = a + 1, b - 1
    while lo < hi:
        c = (lo + hi) // 2
        if chebyshev_line(x[a:c], y[a:c])[2] < chebyshev_line(x[c:b], y[c:b])[2]:
            lo = c + 1
        else:
            hi = c
    return lo


def _fill(
    starts: list[int], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], segments: int
) -> list[int]:
    """Spend unused segments: split the worst (then longest) segment at its best point."""
    parts = {
        (a, b): chebyshev_line(x[a:b], y[a:b])[2]
        for a, b in zip(starts, [*starts[1:], int(x.size)], strict=True)
    }
    while len(parts) < segments:
        (a, b), err = max(parts.items(), key=lambda kv: (kv[1], kv[0][1] - kv[0][0]))
        if b - a < 2:
            break
        cut = (a + b) // 2 if err == 0.0 else _best_cut(x, y, a, b)
        del parts[(a, b)]
        parts[(a, cut)] = chebyshev_line(x[a:cut], y[a:cut])[2]
        parts[(cut, b)] = chebyshev_line(x[cut:b], y[cut:b])[2]
    return sorted(a for a, _ in parts)


def _fixed_point(
    lines: list[tuple[float, float]],
    starts: npt.NDArray[np.int64],
    qmax: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], int]:
    """Bases and slopes in int32 with the most fraction bits (<= DEFAULT_SHIFT) that fit."""
    last = np.append(starts[1:], qmax + 1) - starts - 1
    for shift in range(DEFAULT_SHIFT, -1, -1):
        one = float(2**shift)
        half = 2 ** (shift - 1) if shift else 0
        m = np.array([round(s * one) for s, _ in lines], dtype=np.int64)
        b = np.array([round(v * one) + half for _, v in lines], dtype=np.int64)
        worst = np.max(np.abs(np.stack([b, b + last * m, last * m])))
        if worst <= _INT32_MAX:
            return b.astype(np.int32), m.astype(np.int32), shift
    raise SpecError("the fitted lines do not fit int32 arithmetic even without fraction bits")


def build_pwl_lut(
    *,
    segments: int,
    in_range: tuple[float, float] | None = None,
    in_qparams: QParams | None = None,
    in_dtype: QDType = "int8",
    out_dtype: QDType = "int8",
    out_qparams: QParams | None = None,
    form: GeluForm = "exact",
) -> PwlLutSpec:
    """Build an ``S``-segment PWL table fitted to the full table of the same qparams."""
    if isinstance(segments, bool) or segments not in PWL_SIZES:
        raise SpecError(f"segments must be one of {PWL_SIZES}, got {segments!r}")
    if form not in GELU_FORMS:
        raise SpecError(f"unknown GELU form {form!r}; expected one of {', '.join(GELU_FORMS)}")
    if in_qparams is None:
        if in_range is None:
            raise SpecError("give an input range or input qparams")
        if in_dtype not in _PWL_DTYPES:
            raise SpecError(f"PWL tables take int8, uint8 or int16 input, not {in_dtype!r}")
        in_qparams = QParams.from_range(float(in_range[0]), float(in_range[1]), in_dtype)
    elif in_range is not None:
        raise SpecError("give an input range or input qparams, not both")
    if out_qparams is None:
        if out_dtype not in _PWL_DTYPES:
            raise SpecError(f"PWL tables have int8, uint8 or int16 output, not {out_dtype!r}")
        out_qparams = gelu_output_qparams(in_qparams, out_dtype, form)
    table = build_lut(
        in_qparams=in_qparams, out_qparams=out_qparams, out_dtype=out_qparams.dtype, form=form
    ).table
    codes = in_qparams.codes().astype(np.int64)
    x, y = codes.astype(np.float64), table.astype(np.float64)
    stride = max(1, codes.size // 256)
    if stride > 1:  # int16: breakpoints searched on every stride-th code (and the last)
        sub = np.unique(np.append(np.arange(0, codes.size, stride), codes.size - 1))
        idx = [int(sub[i]) for i in optimal_breakpoints(x[sub], y[sub], segments)]
    else:
        idx = optimal_breakpoints(x, y, segments)
    idx = _fill(idx, x, y, segments)
    bounds = [*idx, int(codes.size)]
    lines = []
    for a, b in itertools.pairwise(bounds):
        m, v, _ = chebyshev_line(x[a:b], y[a:b])
        lines.append((m, v))
    starts = codes[np.array(idx)]
    bases, slopes, shift = _fixed_point(lines, starts, in_qparams.qmax)
    return PwlLutSpec(
        in_qparams=in_qparams,
        out_qparams=out_qparams,
        form=form,
        starts=starts.astype(np.int32),
        bases=bases,
        slopes=slopes,
        shift=shift,
    )
