"""The machinery behind :func:`gelu_quant.lut.poly.build_poly`: grids, minimax fits, breakpoints.

Everything here works in float64 on a *grid* of the inputs the op will see: every float16 value
of the range for float16 inputs, a dense grid (uniform plus geometric near 0) for float32
inputs. Errors are measured in *units*: float16 ulps of the correctly rounded GELU for float16
outputs (subnormal ulps, ``2**-24``, where ``|GELU| < 2**-14``), and
``max(|GELU|, 2**-14)`` (relative error) for float32 outputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant.numerics import GeluForm, gelu

F64 = npt.NDArray[np.float64]
_NP: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}
FP16_MIN_NORMAL = 2.0**-14
FP32_MIN_NORMAL = 2.0**-126
FOCUS_SLACK = 16.0
"""How much less an error outside a focus range counts (see :meth:`Grid.build`)."""
_ULP_PENALTY = 10**6


def _fp16_values(lo: float, hi: float) -> F64:
    bits = np.arange(0, 0x7C00, dtype=np.uint16)
    pos = bits.view(np.float16).astype(np.float64)
    allv = np.concatenate([-pos[:0:-1], pos])
    return allv[(allv >= lo) & (allv <= hi)]


def _fp32_grid(lo: float, hi: float) -> F64:
    parts = [np.linspace(lo, hi, 60001)]
    geo = np.geomspace(1e-8, 2.0, 3001)
    parts += [geo, -geo, np.zeros(1)]
    g = np.concatenate(parts)
    g = g[(g >= lo) & (g <= hi)].astype(np.float32).astype(np.float64)
    return np.unique(g)


def _tiny_edge(lo: float, hi: float, form: GeluForm) -> float | None:
    """The most negative float32 ``x`` in ``[lo, hi]`` with ``|GELU(x)| >= 2**-126`` (where a
    zero end segment must stop), when the range reaches below it."""
    xs = np.linspace(lo, min(hi, 0.0), 20001).astype(np.float32).astype(np.float64)
    ok = np.abs(gelu(xs, form)) >= FP32_MIN_NORMAL
    if ok[0] or not ok.any():
        return None
    i = int(np.argmax(ok))
    a, b = np.float32(xs[i - 1]), np.float32(xs[i])
    bits = np.arange(int(np.abs(b).view(np.uint32)), int(np.abs(a).view(np.uint32)) + 1)
    cand = -bits.astype(np.uint32).view(np.float32).astype(np.float64)
    good = cand[np.abs(gelu(cand, form)) >= FP32_MIN_NORMAL]
    return float(good.min())


def fp16_ulp_unit(g: F64) -> F64:
    """Float16 ulp at each value, subnormals included (``2**-24`` below ``2**-14``).

    Continuous across the normal threshold, unlike the score's absolute target there
    (``2**-14``, 1024 of these units): the fit aims at subnormal accuracy too, which costs
    nothing where the target is reachable and keeps the absolute errors small where it is not.
    """
    _, e = np.frexp(np.maximum(np.abs(g), FP16_MIN_NORMAL))
    return np.ldexp(1.0, e - 11)


@dataclass(frozen=True)
class Grid:
    """The op's inputs over a range, their GELU, and the unit errors are measured in."""

    x: F64
    g: F64
    unit: F64
    io_dtype: str
    cr: npt.NDArray[np.float16] | None
    """Correctly rounded float16 GELU (float16 outputs only)."""

    @classmethod
    def build(
        cls,
        lo: float,
        hi: float,
        io_dtype: str,
        form: GeluForm,
        focus: tuple[float, float] | None = None,
    ) -> Grid:
        """The grid of ``[lo, hi]``. With ``focus``, errors outside it are measured in units
        :data:`FOCUS_SLACK` times larger, so breakpoints and fits spend their accuracy inside."""
        if io_dtype == "float16":
            x = _fp16_values(lo, hi)
            g = gelu(x, form)
            unit, cr = fp16_ulp_unit(g), g.astype(np.float16)
        else:
            x = _fp32_grid(lo, hi)
            edge = _tiny_edge(lo, hi, form)
            if edge is not None:
                x = np.unique(np.concatenate([x, [edge]]))
            g = gelu(x, form)
            unit, cr = np.maximum(np.abs(g), FP32_MIN_NORMAL), None
        if focus is not None:
            unit = np.where((x < focus[0]) | (x > focus[1]), unit * FOCUS_SLACK, unit)
        return cls(x, g, unit, io_dtype, cr)

    def index(self, v: float) -> int:
        """Index of the grid point ``v`` (which must be on the grid)."""
        i = int(np.searchsorted(self.x, v))
        if i >= self.x.size or self.x[i] != v:
            raise ValueError(f"{v} is not a grid point")
        return i


# -- minimax fitting --------------------------------------------------------------------------
def _vander(t: F64, scale: float, lo_pow: int, degree: int) -> F64:
    s = t / scale
    return np.stack([s**p for p in range(lo_pow, degree + 1)], axis=1)


def lawson(a: F64, f: F64, w: F64, iters: int = 40) -> tuple[F64, float]:
    """Weighted minimax fit ``min_c max_i w_i |(a c - f)_i|`` by Lawson's algorithm.

    Returns the best coefficients seen and their weighted max error.
    """
    n = f.size
    if n <= a.shape[1]:
        c0: F64 = np.asarray(np.linalg.lstsq(a, f, rcond=None)[0], dtype=np.float64)
        return c0, float(np.max(w * np.abs(a @ c0 - f))) if n else 0.0
    v = np.full(n, 1.0 / n)
    best_c, best_e = np.zeros(a.shape[1]), math.inf
    w2 = w * w
    for _ in range(iters):
        vw = v * w2
        aw = a * vw[:, None]
        try:
            c = np.asarray(np.linalg.solve(aw.T @ a, aw.T @ f), dtype=np.float64)
        except np.linalg.LinAlgError:  # normal equations (columns are scaled) failed
            sw = np.sqrt(vw)
            c = np.asarray(np.linalg.lstsq(a * sw[:, None], f * sw, rcond=None)[0], np.float64)
        e = w * np.abs(a @ c - f)
        emax = float(e.max())
        if emax < best_e:
            best_c, best_e = c, emax
        if emax == 0.0:
            break
        v = v * e
        s = v.sum()
        if not s > 0:
            break
        v /= s
    return best_c, best_e


def fit_local(
    t: F64, f: F64, w: F64, degree: int, fixed: F64 | None = None, iters: int = 40
) -> F64:
    """Minimax coefficients (low order first) of ``f`` as a polynomial in ``t``.

    ``fixed`` holds already-decided low-order coefficients ``c_0..c_{m-1}``; the rest are fitted
    to the remainder. Columns are scaled by ``max|t|`` for conditioning.
    """
    m = 0 if fixed is None else fixed.size
    c = np.zeros(degree + 1)
    if m:
        assert fixed is not None
        c[:m] = fixed
        f = f - sum(fixed[p] * t**p for p in range(m))
    if m > degree:
        return c
    scale = float(np.max(np.abs(t))) or 1.0
    a = _vander(t, scale, m, degree)
    sol, _ = lawson(a, f, w, iters)
    c[m:] = sol / scale ** np.arange(m, degree + 1)
    return c


# -- breakpoints ------------------------------------------------------------------------------
class SegmentCost:
    """Fast estimate of a segment's best error: weighted least squares at Chebyshev points,
    checked on a sub-grid, plus (for float16 arithmetic) a bound on Horner's rounding error."""

    def __init__(self, grid: Grid, degree: int, compute_dtype: str) -> None:
        self.grid = grid
        self.degree = degree
        self.u = 2.0**-11 if compute_dtype == "float16" else 2.0**-24
        k = np.arange(4 * (degree + 1))
        self.cheb = 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / k.size)
        self.check = np.linspace(0.0, 1.0, 161)
        self.cache: dict[tuple[int, int], float] = {}

    def _pick(self, i: int, j: int, frac: F64) -> npt.NDArray[np.int64]:
        x = self.grid.x
        v = x[i] + frac * (x[j] - x[i])
        idx = np.clip(np.searchsorted(x, v), i, j)
        return np.unique(np.concatenate([idx, [i, j]]))

    def __call__(self, i: int, j: int) -> float:
        key = (i, j)
        if key in self.cache:
            return self.cache[key]
        x, g, unit = self.grid.x, self.grid.g, self.grid.unit
        at_zero = x[i] == 0.0 or x[j] == 0.0
        origin = 0.0 if at_zero else 0.5 * (x[i] + x[j])
        fit = self._pick(i, j, self.cheb)
        chk = np.union1d(fit, self._pick(i, j, self.check))
        lo_pow = 1 if at_zero else 0
        t = x[fit] - origin
        scale = float(np.max(np.abs(t))) or 1.0
        a = _vander(t, scale, lo_pow, self.degree)
        w = 1.0 / unit[fit]
        sol = np.linalg.lstsq(a * w[:, None], g[fit] * w, rcond=None)[0]
        tc = x[chk] - origin
        c = sol / scale ** np.arange(lo_pow, self.degree + 1)
        if lo_pow:
            c = np.concatenate([[0.0], c])
        # Horner in float64 with a running bound of its rounding errors in the target dtype:
        # a rounding at step j (relative u) reaches the output multiplied by |t|^j.
        acc = np.full(tc.size, c[-1])
        bound = np.zeros(tc.size)
        at = np.abs(tc)
        for j in range(self.degree - 1, -1, -1):
            prod = acc * tc
            acc = prod + c[j]
            bound += at**j * (np.abs(prod) + np.abs(acc))
        err = np.abs(acc - g[chk]) + self.u * bound
        cost = float(np.max(err / unit[chk]))
        self.cache[key] = cost
        return cost


def _grow(cost: SegmentCost, start: int, stop: int, eps: float, limit: int) -> list[int] | None:
    """Greedy cover of grid indices from ``start`` towards ``stop`` (either direction) with
    segments whose cost is at most ``eps``. Returns the breakpoint indices (from ``start``), or
    None when more than ``limit`` segments would be needed."""
    step = 1 if stop > start else -1
    cuts = [start]
    cur = start
    while cur != stop:
        if len(cuts) > limit:
            return None

        def ok(e: int, cur: int = cur) -> bool:
            return cost(min(cur, e), max(cur, e)) <= eps

        if ok(stop):
            nxt = stop
        else:
            good, bad = cur + step, stop  # binary search on the far end
            if not ok(good):
                return None
            while abs(bad - good) > 1:
                mid = (good + bad) // 2
                if ok(mid):
                    good = mid
                else:
                    bad = mid
            nxt = good
        cuts.append(nxt)
        cur = nxt
    return cuts if len(cuts) - 1 <= limit else None


def _cover(
    cost: SegmentCost, lo_i: int, hi_i: int, zero_i: int | None, eps: float, limit: int
) -> list[int] | None:
    """Breakpoint indices covering ``[lo_i, hi_i]`` with at most ``limit`` segments, grown
    outwards from 0 when 0 is inside."""
    if zero_i is None or zero_i in (lo_i, hi_i):
        out = _grow(cost, lo_i, hi_i, eps, limit)
        return out
    left = _grow(cost, zero_i, lo_i, eps, limit - 1)
    if left is None:
        return None
    right = _grow(cost, zero_i, hi_i, eps, limit - (len(left) - 1))
    if right is None:
        return None
    return left[::-1] + right[1:]


def _balance(cost: SegmentCost, cuts: list[int], keep: int | None, sweeps: int = 3) -> list[int]:
    """Move each interior breakpoint (but ``keep``, the one at 0) to even out the costs of its
    two segments: the greedy cover leaves its slack in the last segment it grows."""
    cuts = list(cuts)
    for _ in range(sweeps):
        moved = False
        for i in range(1, len(cuts) - 1):
            a, b = cuts[i - 1], cuts[i + 1]
            if cuts[i] == keep or b - a < 3:
                continue
            lo, hi = a + 1, b - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if cost(a, mid) < cost(mid, b):
                    lo = mid
                else:
                    hi = mid
            options = [cuts[i], lo, hi]
            m = min(options, key=lambda m: max(cost(a, m), cost(m, b)))
            if m != cuts[i]:
                cuts[i], moved = m, True
        if not moved:
            break
    return cuts


def optimise_breakpoints(
    cost: SegmentCost, lo_i: int, hi_i: int, zero_i: int | None, segments: int
) -> tuple[list[int], float]:
    """Smallest ``eps`` (to a few percent) whose greedy cover needs at most ``segments``
    segments. Returns the breakpoint indices (possibly fewer segments) and the cost reached."""
    n_sides = 2 if zero_i is not None and lo_i < zero_i < hi_i else 1
    if segments < n_sides:
        raise ValueError("not enough segments")
    lo_e, hi_e = 1e-9, 1e9
    best: list[int] | None = None
    while _cover(cost, lo_i, hi_i, zero_i, hi_e, segments) is None:
        hi_e *= 1e3
        if hi_e > 1e30:
            raise ValueError("cannot cover the range")
    for _ in range(40):
        if hi_e / lo_e < 1.02:
            break
        mid = math.sqrt(lo_e * hi_e)
        if _cover(cost, lo_i, hi_i, zero_i, mid, segments) is None:
            lo_e = mid
        else:
            hi_e = mid
    best = _cover(cost, lo_i, hi_i, zero_i, hi_e, segments)
    assert best is not None
    if cost.u < 2.0**-20:
        # In float32 arithmetic the cost model is the approximation error, which balancing
        # evens out; in float16 it is dominated by a rounding bound that the exact scoring
        # after the fit judges better (balancing on it made 32 x 4 segments worse).
        best = _balance(cost, best, zero_i)
    worst = max(cost(a, b) for a, b in itertools.pairwise(best))
    return best, worst


# -- coefficients in the target arithmetic ------------------------------------------------------
def _neighbours(v: float, dtype: type[np.floating], reach: int) -> npt.NDArray[np.floating]:
    """``v`` and up to ``reach`` representable values on either side, in ``dtype``."""
    out = [dtype(v)]
    up = down = dtype(v)
    big = np.finfo(dtype).max
    for _ in range(reach):
        up = np.nextafter(up, dtype(np.inf)) if up < big else up
        down = np.nextafter(down, dtype(-np.inf)) if down > -big else down
        out += [up, down]
    return np.array(out, dtype=dtype)


@dataclass
class SegmentData:
    """One segment's inputs (io dtype values as float64) and targets."""

    x: F64
    g: F64
    unit: F64
    cr: npt.NDArray[np.float16] | None
    io_dtype: str
    compute_dtype: str
    _ob: npt.NDArray[np.int32] | None = None
    _normal: npt.NDArray[np.bool_] | None = None

    def t(self, origin: float) -> F64:
        cp = _NP[self.compute_dtype]
        tt = self.x.astype(cp) - cp(origin)
        return np.asarray(tt.astype(cp), dtype=np.float64)

    def score(
        self, origin: float, coefs: npt.NDArray[np.floating]
    ) -> tuple[npt.NDArray[np.int64], F64]:
        """Exact evaluation of candidate coefficient rows ``coefs`` (C, d+1) of the compute
        dtype: (max error, sum of errors) per candidate, in units (float16 ulps for float16
        outputs; abs-region errors over ``2**-14`` count as a huge penalty)."""
        cp, io = _NP[self.compute_dtype], _NP[self.io_dtype]
        t = (self.x.astype(cp) - cp(origin)).astype(cp)
        with np.errstate(all="ignore"):
            y = _horner_fast(coefs, t).astype(io)
        if self.cr is not None:
            if self._ob is None or self._normal is None:
                self._ob = _ordered16(self.cr)
                self._normal = np.abs(self.g) >= FP16_MIN_NORMAL
            normal = self._normal
            ulp = np.abs(_ordered16(y) - self._ob[None, :])
            err = np.where(normal[None, :], ulp, 0)
            # below 2**-14 only an absolute error over 2**-14 counts (>= 512 steps away)
            ci, ni = np.nonzero(~normal[None, :] & (ulp >= 512))
            if ci.size:
                bad = np.abs(y[ci, ni].astype(np.float64) - self.g[ni]) > FP16_MIN_NORMAL
                err[ci[bad], ni[bad]] = _ULP_PENALTY
            return err.max(axis=1), err.sum(axis=1).astype(np.float64)
        rel = np.abs(y.astype(np.float64) - self.g[None, :]) / self.unit[None, :]
        return rel.max(axis=1), rel.sum(axis=1)


def _ordered16(y: npt.NDArray[np.floating]) -> npt.NDArray[np.int32]:
    """Float16 values to integers whose differences count ulps (both zeros map to 0)."""
    b = y.astype(np.float16).view(np.uint16).astype(np.int32)
    return np.where(b >= 0x8000, 0x8000 - b, b)


def round_to_fp16(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Float32 values rounded to the nearest float16 value (ties to even), kept in float32.

    Same result as ``v.astype(float16).astype(float32)`` for finite ``v`` (overflow gives inf),
    several times faster: the significand is rounded to 10 bits in the integer bit pattern,
    and below ``2**-14`` to a multiple of ``2**-24`` by adding and subtracting 0.5.
    """
    b = v.view(np.uint32)
    r = (
        (b + np.uint32(0x0FFF) + ((b >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    ).view(np.float32)
    av = np.abs(v)
    half = np.float32(0.5)
    r = np.where(av < np.float32(FP16_MIN_NORMAL), np.copysign((av + half) - half, v), r)
    return np.where(np.abs(r) > np.float32(65504.0), np.copysign(np.float32(np.inf), v), r)


def _horner_fast(coefs: npt.NDArray[np.floating], t: npt.NDArray[np.floating]) -> Any:
    """:func:`gelu_quant.lut.poly.horner` for candidate rows ``coefs`` (C, d+1) on ``t`` (n,).

    Float16 operations are done as float32 operations rounded once to float16 by
    :func:`round_to_fp16`: a float32 product of float16 values is exact and a float32 sum is
    correctly rounded, and float32 has enough digits (24 >= 2*11 + 2) for that double rounding
    to equal float16 arithmetic bit for bit.
    """
    dt = t.dtype.type
    if dt is not np.float16:
        from gelu_quant.lut.poly import horner

        return horner(coefs[:, None, :], t[None, :])
    c32 = coefs.astype(np.float32)
    t32 = t.astype(np.float32)[None, :]
    acc = np.broadcast_to(c32[:, -1:], (coefs.shape[0], t.size))
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(coefs.shape[1] - 2, -1, -1):
            acc = round_to_fp16(acc * t32)
            acc = round_to_fp16(acc + c32[:, j : j + 1])
    return acc.astype(np.float16)


def _subsample(x: F64, n: int) -> npt.NDArray[np.int64]:
    """At most about ``n`` indices of the sorted ``x``, spread evenly in value, ends included."""
    if x.size <= n:
        return np.arange(x.size)
    v = np.linspace(x[0], x[-1], n)
    idx = np.clip(np.searchsorted(x, v), 0, x.size - 1)
    return np.unique(np.concatenate([idx, [0, x.size - 1]]))


def round_coefficients(
    seg: SegmentData, origin: float, degree: int, fix_c0: bool, search: bool
) -> tuple[npt.NDArray[np.floating], tuple[float, float]]:
    """Fit, round to the compute dtype and (optionally) search neighbouring values.

    Rounding goes from ``c_0`` up, refitting the higher coefficients after each (fitting on the
    rounded local coordinates the op actually computes). The search is coordinate descent over
    +-2 representable neighbours of each coefficient, scored exactly (max error, then total).
    """
    cp = _NP[seg.compute_dtype]
    sub = _subsample(seg.x, 2500)
    t = seg.t(origin)[sub]
    g = seg.g[sub]
    w = 1.0 / seg.unit[sub]
    fixed = np.zeros(1) if fix_c0 else None
    c = fit_local(t, g, w, degree, fixed)
    big = float(np.finfo(cp).max)
    if seg.compute_dtype == "float16":
        for j in range(1 if fix_c0 else 0, degree + 1):
            done = np.clip(c[: j + 1], -big, big).astype(cp).astype(np.float64)
            c = fit_local(t, g, w, degree, done, iters=20) if j < degree else done
    best = np.clip(c, -big, big).astype(cp)
    if fix_c0:
        best[0] = cp(0)
    mx, sm = seg.score(origin, best[None, :])
    score = (float(mx[0]), float(sm[0]))
    if not search:
        return best, score
    for _ in range(6):
        improved = False
        for j in range(1 if fix_c0 else 0, degree + 1):
            cand = np.repeat(best[None, :], 5, axis=0)
            cand[:, j] = _neighbours(float(best[j]), cp, 2)
            mx, sm = seg.score(origin, cand)
            order = np.lexsort((sm, mx))
            k = int(order[0])
            s = (float(mx[k]), float(sm[k]))
            if s < score:
                best, score, improved = cand[k].copy(), s, True
        if not improved:
            break
    return best, score


@dataclass(frozen=True)
class FittedSegment:
    origin: float
    coefficients: npt.NDArray[np.floating]
    score: tuple[float, float]
    """(max error, total error) over the segment's inputs, in units."""
    n: int
    """Number of inputs scored."""


def fit_segment(
    grid: Grid, a: float, b: float, include_b: bool, degree: int, compute_dtype: str
) -> FittedSegment:
    """Fit, round and (float16 arithmetic) search the segment ``[a, b)`` (``[a, b]``).

    Segments that touch 0 use origin 0 and ``c_0 = 0``. Others try origins at both ends and
    the middle (scored exactly, so the best one wins).
    """
    cp = _NP[compute_dtype]
    sel = (grid.x >= a) & ((grid.x < b) | (include_b & (grid.x == b)))
    seg = SegmentData(
        grid.x[sel],
        grid.g[sel],
        grid.unit[sel],
        None if grid.cr is None else grid.cr[sel],
        grid.io_dtype,
        compute_dtype,
    )
    at_zero = 0.0 in (a, b)
    # otherwise both ends and the middle (exact scoring picks): in exponential tails the end
    # where |GELU| is smallest makes every Horner term of one sign, so nothing cancels
    ends = sorted({float(cp(v)) for v in (a, 0.5 * (a + b), b)})
    cands = [0.0] if at_zero else ends
    best: FittedSegment | None = None
    for o in cands:
        row, score = round_coefficients(seg, o, degree, at_zero, search=compute_dtype == "float16")
        if best is None or score < best.score:
            best = FittedSegment(o, row, score, int(seg.x.size))
    assert best is not None
    return best
