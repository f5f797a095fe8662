"""Piecewise polynomials for GELU: the spec, its exact evaluation, and the minimax fitter.

A :class:`PolySpec` splits ``[lo, hi]`` into ``K`` segments at ``breakpoints`` (a breakpoint at
0 when the range contains it). Segment ``k`` is a polynomial of degree ``d`` in the *local*
coordinate ``t = x - origins[k]``, evaluated by Horner's rule with every operation rounded to
``compute_dtype``. Local coordinates are what make float16 arithmetic usable at all: a fit in the
global coordinate ``x`` loses everything to cancellation between large terms.

The fitter (:func:`build_poly`) minimises the error that is scored: relative error where
``|GELU(x)| >= 2**-14`` (float16 ulps for float16 outputs) and absolute error below. It

1. chooses breakpoints: uniformly (per side of 0), or *optimised*: a binary search on a target
   error ``eps`` such that greedy segment growth from 0 outwards covers the range with at most
   ``K`` segments, each segment's error estimated by a weighted least-squares fit plus (in
   float16 arithmetic) a running bound of Horner's rounding errors; in float32 arithmetic the
   breakpoints are then moved to even out neighbouring errors. For float16 outputs the range's
   ends get exact special segments where possible: a zero segment where ``|GELU(x)| < 2**-14``
   (the absolute target is met by 0) and an identity segment where GELU(x) rounds to ``x`` for
   every float16 input. Segments the search leaves over split, one at a time, the segment
   whose exact score (step 3) is worst;
2. fits each segment with Lawson's iteratively reweighted least squares (a minimax fit) on the
   segment's float16 inputs (or a dense grid for float32 inputs), with ``c_0 = 0`` and origin 0
   for the two segments adjacent to 0 (GELU(x) ~ x/2 there, relative accuracy);
3. rounds the coefficients to ``compute_dtype``; in float16 it rounds them one at a time from
   ``c_0`` up, refitting the higher ones after each, then improves them by a local search over
   neighbouring float16 values scored by the exact float16 evaluation on every input of the
   segment.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.numerics import GELU_FORMS, GeluForm

FloatDType = Literal["float16", "float32"]
FLOAT_DTYPES: tuple[FloatDType, ...] = ("float16", "float32")
BreakpointMode = Literal["optimized", "uniform"]
MAX_DEGREE = 8
_NP: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}
FP16_MIN_NORMAL = 2.0**-14
FP32_MIN_NORMAL = 2.0**-126


def _representable(v: float, dtype: str) -> bool:
    return bool(float(_NP[dtype](v)) == v)


def horner(coefficients: npt.NDArray[np.floating], t: npt.NDArray[np.floating]) -> Any:
    """``((c_d t + c_{d-1}) t + ...) t + c_0`` with each multiply and add rounded to t's dtype.

    ``coefficients[..., j]`` is ``c_j`` (low order first) and broadcasts against ``t``; both
    must already be of the compute dtype. No fused multiply-add.
    """
    dt = t.dtype.type
    acc = coefficients[..., -1]
    for j in range(coefficients.shape[-1] - 2, -1, -1):
        acc = (acc * t).astype(dt)
        acc = (acc + coefficients[..., j]).astype(dt)
    return np.broadcast_to(acc, np.broadcast_shapes(np.shape(acc), t.shape)).astype(dt)


@register_spec
@dataclass(frozen=True, eq=False)
class PolySpec(GeluApprox):
    """Piecewise polynomial GELU evaluated in a given float arithmetic.

    Semantics of the op (what :meth:`evaluate` computes and the ONNX body reproduces bit for
    bit), for an input ``x``:

    1. ``xi = Cast(x, io_dtype)`` (round to nearest even);
    2. segment ``k``: the ``k`` with ``breakpoints[k] <= xi < breakpoints[k+1]``, i.e.
       ``k = sum_{j=1..K-1} (xi >= breakpoints[j])``; ``xi == hi`` is in the last segment;
    3. ``xc = Cast(xi, compute_dtype)`` (exact: compute is at least as wide as io);
    4. ``t = xc - origins[k]``, one subtraction rounded to ``compute_dtype``;
    5. ``acc = c[k, d]``; then for ``j = d-1, ..., 0``: ``acc = acc * t`` (rounded), then
       ``acc = acc + c[k, j]`` (rounded) -- ``d`` multiplies and ``d`` adds, no FMA;
    6. ``y = Cast(acc, io_dtype)``;
    7. tails: ``xi < lo -> 0``, ``xi > hi -> xi``; NaN in, NaN out.

    The tails are GELU's limits. They are exact in ``io_dtype`` only beyond the points where
    GELU of the form rounds to 0 (below) and to ``x`` (above) in that dtype
    (:func:`exact_tail_domain`; exact form, float16: -5.72 / 3.45; float32: -14.36 / 5.35;
    QuickGELU decays slowly: float16 -11.6, float32 -63.5). :func:`build_exact_poly` fits that
    domain, which is what conversion uses; a spec fitted on a narrower range is wrong in
    its tails inside that domain, and its error report (over the whole real line) shows it.
    """

    kind = "poly"

    form: GeluForm
    lo: float
    hi: float
    breakpoints: tuple[float, ...]
    origins: tuple[float, ...]
    coefficients: npt.NDArray[np.floating] = field(repr=False)
    """Shape ``(K, degree + 1)``, low order first, dtype ``compute_dtype``."""
    io_dtype: FloatDType = "float16"
    compute_dtype: FloatDType = "float16"

    def __post_init__(self) -> None:
        if self.form not in GELU_FORMS:
            raise SpecError(f"unknown GELU form {self.form!r}; expected one of {GELU_FORMS}")
        for name in ("io_dtype", "compute_dtype"):
            if getattr(self, name) not in FLOAT_DTYPES:
                raise SpecError(
                    f"unknown {name} {getattr(self, name)!r}; expected float16 or float32"
                )
        if self.io_dtype == "float32" and self.compute_dtype == "float16":
            raise SpecError("float16 arithmetic on float32 inputs is not supported; use float32")
        bp = tuple(float(b) for b in self.breakpoints)
        og = tuple(float(o) for o in self.origins)
        object.__setattr__(self, "breakpoints", bp)
        object.__setattr__(self, "origins", og)
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        k = len(bp) - 1
        if k < 1:
            raise SpecError("a polynomial spec needs at least one segment (two breakpoints)")
        if bp[0] != self.lo or bp[-1] != self.hi:
            raise SpecError(f"breakpoints must run from lo={self.lo} to hi={self.hi}")
        if not all(a < b for a, b in itertools.pairwise(bp)):
            raise SpecError("breakpoints must be strictly ascending")
        if not all(math.isfinite(b) and _representable(b, self.io_dtype) for b in bp):
            raise SpecError(f"breakpoints must be finite {self.io_dtype} values")
        if self.lo < 0.0 < self.hi and 0.0 not in bp:
            raise SpecError("the breakpoints of a range that contains 0 must include 0")
        if len(og) != k or not all(
            math.isfinite(o) and _representable(o, self.compute_dtype) for o in og
        ):
            raise SpecError(f"need {k} finite {self.compute_dtype} origins, one per segment")
        c = self.coefficients
        if not isinstance(c, np.ndarray) or c.dtype != _NP[self.compute_dtype]:
            raise SpecError(f"coefficients must be a {self.compute_dtype} array")
        if c.ndim != 2 or c.shape[0] != k or not 2 <= c.shape[1] <= MAX_DEGREE + 1:
            raise SpecError(
                f"coefficients have shape {c.shape}; expected ({k}, degree + 1), degree "
                f"1..{MAX_DEGREE}"
            )
        if not np.all(np.isfinite(c)):
            raise SpecError("coefficients must be finite")
        c = c.copy()
        c.setflags(write=False)
        object.__setattr__(self, "coefficients", c)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PolySpec)
            and self.form == other.form
            and self.lo == other.lo
            and self.hi == other.hi
            and self.breakpoints == other.breakpoints
            and self.origins == other.origins
            and self.io_dtype == other.io_dtype
            and self.compute_dtype == other.compute_dtype
            and self.coefficients.dtype == other.coefficients.dtype
            and self.coefficients.shape == other.coefficients.shape
            and bool(np.all(self.coefficients.view(np.uint8) == other.coefficients.view(np.uint8)))
        )

    __hash__ = None  # type: ignore[assignment]

    # -- facts -------------------------------------------------------------------------------
    @property
    def domain(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    @property
    def segments(self) -> int:
        return len(self.breakpoints) - 1

    @property
    def degree(self) -> int:
        return int(self.coefficients.shape[1]) - 1

    @property
    def ulp_dtype(self) -> str:
        """The io dtype: float16 specs are scored in float16 ulps on every float16 input, and
        float32 specs on float32 inputs (see :func:`gelu_quant.lut.error_report.error_report`)."""
        return self.io_dtype

    whole_line = True
    """Error reports cover the whole real line (tails included), not just the fitted domain."""

    @property
    def cost(self) -> int:
        """Segments x degree: the multiply-adds and table entries a device pays for."""
        return self.segments * self.degree

    # -- semantics ---------------------------------------------------------------------------
    def segment_index(self, xi: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        """Segment of each io-dtype input (0 below ``lo``, K-1 above ``hi``)."""
        inner = np.asarray(self.breakpoints[1:-1], dtype=xi.dtype)
        return np.searchsorted(inner, xi, side="right").astype(np.int64)

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """The op, exactly (see the class docstring for the operation sequence)."""
        io, cp = _NP[self.io_dtype], _NP[self.compute_dtype]
        with np.errstate(all="ignore"):
            xi = np.asarray(x).astype(io)
            shape = xi.shape
            xi = xi.reshape(-1)
            finite = np.isfinite(xi)
            xs = np.where(finite, xi, io(0))
            k = self.segment_index(xs)
            t = (xs.astype(cp) - np.asarray(self.origins, dtype=cp)[k]).astype(cp)
            y = horner(self.coefficients[k], t).astype(io)
            y = np.where(xi < io(self.lo), io(0), y)
            y = np.where(xi > io(self.hi), xi, y)
            y = np.where(np.isnan(xi), xi, y).astype(io)
        return cast(npt.NDArray[np.floating], y.reshape(shape))

    # -- serialisation -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "lo": self.lo,
            "hi": self.hi,
            "io_dtype": self.io_dtype,
            "compute_dtype": self.compute_dtype,
            "segments": self.segments,
            "degree": self.degree,
            "breakpoints": list(self.breakpoints),
            "origins": list(self.origins),
            "coefficients": [[float(v) for v in row] for row in self.coefficients],
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> PolySpec:
        cdt = d["compute_dtype"]
        if cdt not in _NP:
            raise SpecError(f"unknown compute_dtype {cdt!r}")
        coef = np.array(d["coefficients"], dtype=np.float64)
        spec = cls(
            form=d["form"],
            lo=float(d["lo"]),
            hi=float(d["hi"]),
            breakpoints=tuple(float(b) for b in d["breakpoints"]),
            origins=tuple(float(o) for o in d["origins"]),
            coefficients=coef.astype(_NP[cdt]),
            io_dtype=d["io_dtype"],
            compute_dtype=cdt,
        )
        if not np.array_equal(spec.coefficients.astype(np.float64), coef):
            raise SpecError(f"coefficients are not exact {cdt} values")
        if ("segments" in d and d["segments"] != spec.segments) or (
            "degree" in d and d["degree"] != spec.degree
        ):
            raise SpecError("segments/degree disagree with breakpoints/coefficients")
        return spec

    def summary(self) -> str:
        return (
            f"poly: {self.form} GELU on [{self.lo:.6g}, {self.hi:.6g}], {self.segments} segments "
            f"of degree {self.degree} (cost {self.cost}), {self.io_dtype} in/out, "
            f"{self.compute_dtype} Horner, tails 0 below / x above"
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "breakpoints": np.asarray(self.breakpoints, dtype=_NP[self.io_dtype]),
            "origins": np.asarray(self.origins, dtype=_NP[self.compute_dtype]),
            "coefficients": self.coefficients,
        }


# -- the exact-tails domain and the default specs -----------------------------------------------
DEFAULT_SHAPES: dict[tuple[str, str, str], tuple[int, int]] = {
    # (io dtype, compute dtype, form) -> (segments, degree); chosen by benchmarks/poly_table.py
    # and benchmarks/poly_fp32_check.py as the cheapest that meet the bounds (see README)
    ("float16", "float16", "exact"): (11, 5),
    ("float16", "float16", "tanh"): (13, 4),
    ("float16", "float16", "quick"): (11, 5),
    ("float16", "float32", "exact"): (6, 5),
    ("float16", "float32", "tanh"): (6, 5),
    ("float16", "float32", "quick"): (7, 5),
    ("float32", "float32", "exact"): (36, 8),
    ("float32", "float32", "tanh"): (36, 8),
    ("float32", "float32", "quick"): (44, 8),
}
"""Default polynomial shapes. Float16 io (float16 or float32 Horner): within 1 ulp of the
correctly rounded float16 GELU on every float16 input. Float32: within 8 float32 ulps of float64
GELU (relative error <= 2**-20 where ``|GELU| >= 2**-126``, absolute error below 2**-126 there)."""


def default_shape(io_dtype: str, compute_dtype: str, form: str) -> tuple[int, int]:
    """``(segments, degree)`` of the default polynomial for these dtypes and form."""
    try:
        return DEFAULT_SHAPES[(io_dtype, compute_dtype, form)]
    except KeyError:
        raise SpecError(
            f"no default polynomial for io {io_dtype!r}, compute {compute_dtype!r}, form {form!r}"
        ) from None


def exact_tail_domain(form: GeluForm, io_dtype: str) -> tuple[float, float]:
    """The fitted domain beyond which the tails (0 below, ``x`` above) are exact in
    ``io_dtype``: :func:`gelu_quant.numerics.tail_bounds` (GELU of ``form`` rounds to 0 below
    it and to ``x`` above it, for every ``io_dtype`` input)."""
    from gelu_quant.numerics import tail_bounds

    if form not in GELU_FORMS:
        raise SpecError(f"unknown GELU form {form!r}; expected one of {', '.join(GELU_FORMS)}")
    if io_dtype not in FLOAT_DTYPES:
        raise SpecError(f"unknown io dtype {io_dtype!r}; expected float16 or float32")
    return tail_bounds(form, io_dtype)


@functools.lru_cache(maxsize=64)
def _exact_poly_cached(
    form: GeluForm,
    io_dtype: FloatDType,
    compute_dtype: FloatDType,
    segments: int,
    degree: int,
    focus: tuple[float, float] | None,
) -> PolySpec:
    lo, hi = exact_tail_domain(form, io_dtype)
    return build_poly(
        lo,
        hi,
        segments,
        degree,
        io_dtype=io_dtype,
        compute_dtype=compute_dtype,
        form=form,
        focus=focus,
    )


def build_exact_poly(
    *,
    form: GeluForm = "exact",
    io_dtype: FloatDType = "float16",
    compute_dtype: FloatDType = "float16",
    segments: int | None = None,
    degree: int | None = None,
    focus: tuple[float, float] | None = None,
) -> PolySpec:
    """A polynomial that is right on the whole real line: fitted on
    :func:`exact_tail_domain` (so its tails are exact in ``io_dtype``), whatever range the
    inputs were calibrated to. ``segments``/``degree`` default to :data:`DEFAULT_SHAPES`.

    The calibrated range (``focus``) decides where accuracy concentrates, never where
    correctness ends: with a shape of the caller's choosing, errors outside it count
    ``FOCUS_SLACK`` (16) times less. The default shapes meet their bound on every input, so
    with them ``focus`` is ignored (one verified spec per form and dtype). Specs are cached:
    the sites of a model share a build.
    """
    d_seg, d_deg = default_shape(io_dtype, compute_dtype, form)
    k = d_seg if segments is None else segments
    d = d_deg if degree is None else degree
    if (k, d) == (d_seg, d_deg):
        focus = None
    lo, hi = exact_tail_domain(form, io_dtype)
    if focus is not None:
        # outside the fitted domain the tails are exact anyway
        f_lo, f_hi = max(float(focus[0]), lo), min(float(focus[1]), hi)
        focus = (f_lo, f_hi) if f_lo < f_hi else None
        if focus is not None and focus[0] <= lo and focus[1] >= hi:
            focus = None
    return _exact_poly_cached(form, io_dtype, compute_dtype, k, d, focus)


# -- building ---------------------------------------------------------------------------------
def _round_out(v: float, dtype: str, down: bool) -> float:
    """``v`` rounded outwards to the nearest value of ``dtype`` (down for lo, up for hi)."""
    d = _NP[dtype]
    r = d(v)
    if down and float(r) > v:
        r = np.nextafter(r, d(-np.inf))
    if not down and float(r) < v:
        r = np.nextafter(r, d(np.inf))
    return float(r)


def _uniform_breakpoints(lo: float, hi: float, segments: int, io: str) -> list[float]:
    """Uniform on each side of 0 (segments shared in proportion to the sides' lengths)."""
    if lo < 0.0 < hi:
        n_neg = min(max(round(segments * -lo / (hi - lo)), 1), segments - 1)
        pts = list(np.linspace(lo, 0.0, n_neg + 1)) + list(
            np.linspace(0.0, hi, segments - n_neg + 1)[1:]
        )
    else:
        pts = list(np.linspace(lo, hi, segments + 1))
    vals = sorted({float(_NP[io](p)) for p in pts} | {lo, hi})
    if len(vals) != segments + 1:
        raise SpecError(
            f"[{lo}, {hi}] is too narrow for {segments} {io} segments; use fewer segments"
        )
    return vals


def build_poly(
    lo: float,
    hi: float,
    segments: int,
    degree: int,
    *,
    io_dtype: FloatDType = "float16",
    compute_dtype: FloatDType = "float16",
    form: GeluForm = "exact",
    breakpoints: BreakpointMode = "optimized",
    focus: tuple[float, float] | None = None,
) -> PolySpec:
    """Fit a piecewise polynomial GELU on ``[lo, hi]`` (see the module docstring).

    ``lo`` and ``hi`` are rounded outwards to ``io_dtype``. ``segments`` counts every segment,
    including the exact zero / identity end segments that optimised float16 breakpoints use.
    ``focus`` (a calibrated range) concentrates the accuracy: errors outside it count
    ``poly_fit.FOCUS_SLACK`` times less when placing breakpoints and fitting.
    """
    from gelu_quant.lut import poly_fit as pf

    if form not in GELU_FORMS:
        raise SpecError(f"unknown GELU form {form!r}; expected one of {', '.join(GELU_FORMS)}")
    for name, v in (("io dtype", io_dtype), ("compute dtype", compute_dtype)):
        if v not in FLOAT_DTYPES:
            raise SpecError(f"unknown {name} {v!r}; expected float16 or float32")
    if io_dtype == "float32" and compute_dtype == "float16":
        raise SpecError("float16 arithmetic on float32 inputs is not supported; use float32")
    if breakpoints not in ("optimized", "uniform"):
        raise SpecError(f"unknown breakpoint mode {breakpoints!r}; expected optimized or uniform")
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise SpecError(f"empty or non-finite range [{lo}, {hi}]: need finite LO < HI")
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise SpecError(f"degree must be an integer from 1 to {MAX_DEGREE}, got {degree!r}")
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise SpecError(f"segments must be a positive integer, got {segments!r}")
    lo_r, hi_r = _round_out(lo, io_dtype, True), _round_out(hi, io_dtype, False)
    if not (math.isfinite(lo_r) and math.isfinite(hi_r)):
        raise SpecError(f"range [{lo}, {hi}] overflows {io_dtype}")
    straddles = lo_r < 0.0 < hi_r
    if straddles and segments < 2:
        raise SpecError("a range that contains 0 needs at least 2 segments (a breakpoint at 0)")

    if focus is not None and not (
        math.isfinite(focus[0]) and math.isfinite(focus[1]) and focus[0] < focus[1]
    ):
        raise SpecError(f"focus range {focus} must be finite with LO < HI")
    grid = pf.Grid.build(lo_r, hi_r, io_dtype, form, focus)
    zero_i = grid.index(0.0) if lo_r <= 0.0 <= hi_r else None
    fixed: dict[int, tuple[float, list[float]]] = {}  # segment -> (origin, coefficients)
    if breakpoints == "uniform":
        bps = _uniform_breakpoints(lo_r, hi_r, segments, io_dtype)
    else:
        bps, fixed = _optimised(grid, zero_i, segments, degree, compute_dtype)

    cp = _NP[compute_dtype]

    def fit(k: int) -> pf.FittedSegment:
        return pf.fit_segment(grid, bps[k], bps[k + 1], k == len(bps) - 2, degree, compute_dtype)

    def exact(k: int) -> pf.FittedSegment:
        o, coefs = fixed[k]
        row = np.zeros(degree + 1)
        row[: len(coefs)] = coefs
        return pf.FittedSegment(o, row.astype(cp), (0.0, 0.0), 0)

    fits = [exact(k) if k in fixed else fit(k) for k in range(len(bps) - 1)]
    special = set(fixed)
    # Segments left over by the breakpoint search split the worst fitted segment (scored
    # exactly, in the target arithmetic) at its middle input.
    while len(bps) - 1 < segments:
        order = sorted(
            (k for k in range(len(fits)) if k not in special),
            key=lambda k: (fits[k].score[0], fits[k].score[1] / max(fits[k].n, 1)),
            reverse=True,
        )
        for k in order:
            inside = grid.x[(grid.x > bps[k]) & (grid.x < bps[k + 1])]
            if inside.size:
                break
        else:
            raise SpecError(
                f"[{lo_r}, {hi_r}] has too few {io_dtype} inputs for {segments} "
                "segments; use fewer segments"
            )
        mid = float(inside[np.argmin(np.abs(inside - 0.5 * (bps[k] + bps[k + 1])))])
        bps.insert(k + 1, mid)
        special = {s if s < k else s + 1 for s in special}
        fits[k : k + 1] = [fits[k], fits[k]]
        fits[k] = fit(k)
        fits[k + 1] = fit(k + 1)
    origins = [f.origin for f in fits]
    rows = [f.coefficients for f in fits]
    return PolySpec(
        form=form,
        lo=lo_r,
        hi=hi_r,
        breakpoints=tuple(bps),
        origins=tuple(origins),
        coefficients=np.stack(rows).astype(cp),
        io_dtype=io_dtype,
        compute_dtype=compute_dtype,
    )


def _optimised(
    grid: Any, zero_i: int | None, segments: int, degree: int, compute_dtype: str
) -> tuple[list[float], dict[int, tuple[float, list[float]]]]:
    """Optimised breakpoints (as values) and the exact end segments they use.

    End segments output 0 (left) or x (right) exactly as far as that meets the target for
    every input: ``|GELU| <`` the smallest normal (2**-14 in float16, 2**-126 in float32: the
    absolute target there), and GELU rounding to ``x``.
    """
    from gelu_quant.lut import poly_fit as pf

    n = grid.x.size
    lo_i, hi_i = 0, n - 1
    cost = pf.SegmentCost(grid, degree, compute_dtype)

    def ends() -> tuple[int | None, int | None]:
        tiny = FP16_MIN_NORMAL if grid.io_dtype == "float16" else FP32_MIN_NORMAL
        zero_ok = np.abs(grid.g) < tiny
        ident_ok = grid.g.astype(_NP[grid.io_dtype]).astype(np.float64) == grid.x
        z = int(np.argmin(zero_ok)) if not zero_ok.all() else n
        z_i = z if 0 < z < hi_i and (zero_i is None or z < zero_i) else None
        r_i = None
        if ident_ok[-1]:
            bad = np.nonzero(~ident_ok)[0]
            r = int(bad[-1]) + 1 if bad.size else 0
            if lo_i < r < hi_i and (zero_i is None or r > zero_i):
                r_i = r
        return z_i, r_i

    Attempt = tuple[float, list[int], bool, bool]  # eps, cuts, zero segment, identity segment

    def attempt(z_i: int | None, r_i: int | None) -> Attempt | None:
        a = lo_i if z_i is None else z_i
        b = hi_i if r_i is None else r_i
        k_poly = segments - int(z_i is not None) - int(r_i is not None)
        zi = zero_i if zero_i is not None and a <= zero_i <= b else None
        if k_poly < (2 if zi is not None and a < zi < b else 1):
            return None
        cuts, eps = pf.optimise_breakpoints(cost, a, b, zi, k_poly)
        return eps, cuts, z_i is not None, r_i is not None

    best: Attempt | None = None
    # exact end segments cost nothing: take the first layout that fits
    z_i, r_i = ends()
    for zz, rr in ((z_i, r_i), (z_i, None), (None, r_i), (None, None)):
        best = attempt(zz, rr)
        if best is not None:
            break
    if best is None:
        raise SpecError(f"cannot place {segments} segments; use more segments")
    _, cuts, use_z, use_r = best
    idx = ([lo_i] if use_z else []) + cuts + ([hi_i] if use_r else [])
    bps = [float(grid.x[i]) for i in idx]
    fixed: dict[int, tuple[float, list[float]]] = {}
    if use_z:
        fixed[0] = (0.0, [0.0])
    if use_r:
        fixed[len(bps) - 2] = (0.0, [0.0, 1.0])
    return bps, fixed
