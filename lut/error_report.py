"""Error reports: every spec scored against float64 GELU.

Two views:

* **dense**: max and mean absolute error over a dense grid of the spec's domain (and, for
  table specs, at the real value of every input code);
* **fp16 ulp** (for specs that evaluate float16 inputs directly): over *every* float16 value in
  the domain, the distance in units of the last place between the spec's output and the correctly
  rounded float16 GELU, where ``|GELU(x)| >= 2**-14`` (float16's smallest normal), and the
  absolute error below that;
* **fp32** (float32 io): over the dense grid, float32 ulps from the correctly rounded GELU and
  relative error where ``|GELU(x)| >= 2**-126``, absolute error below.

Specs with ``whole_line`` (polynomials) are reported over the whole real line: every finite
float16 value, or for float32 a dense grid over the fitted domain widened by half its length
plus geometric samples of both tails out to the largest float32, so a tail that is not exact
in its precision shows up in the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gelu_quant.lut.spec import GeluApprox
from gelu_quant.numerics import GeluForm, gelu

FP16_MIN_NORMAL = 2.0**-14


def fp16_inputs(lo: float, hi: float) -> npt.NDArray[np.float16]:
    """Every finite float16 value in ``[lo, hi]``, ascending (one zero)."""
    bits = np.arange(0, 0x7C00, dtype=np.uint16)  # +0 .. largest finite, ascending
    pos = bits.view(np.float16)
    neg = (bits[1:] | np.uint16(0x8000)).view(np.float16)[::-1]
    allv = np.concatenate([neg, pos])
    return allv[(allv >= lo) & (allv <= hi)]


def _ordered(y: npt.NDArray[np.float16]) -> npt.NDArray[np.int64]:
    """Map float16 values to integers whose differences count ulps (+0 and -0 both map to 0)."""
    b = y.astype(np.float16).view(np.uint16).astype(np.int64)
    mag = b & 0x7FFF
    return np.where(b & 0x8000, -mag, mag)


def ulp_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Number of float16 values between ``a`` and ``b`` (both rounded to float16 first)."""
    return np.abs(
        _ordered(np.asarray(a, dtype=np.float16)) - _ordered(np.asarray(b, dtype=np.float16))
    )


@dataclass(frozen=True)
class Fp16UlpReport:
    """Float16 output scored on every float16 input of a range."""

    n_inputs: int
    n_ulp_scored: int
    """Inputs with ``|GELU(x)| >= 2**-14``: scored in ulps."""
    max_ulp: int
    mean_ulp: float
    pct_correctly_rounded: float
    """Percentage of ulp-scored inputs whose output is the correctly rounded GELU."""
    worst_x: float
    max_abs_below_normal: float
    """Largest absolute error where ``|GELU(x)| < 2**-14`` (the target is <= 2**-14)."""
    n_below_normal_over: int
    """Inputs below the normal range whose absolute error exceeds 2**-14."""
    ulp_histogram: dict[str, int]
    """How many ulp-scored inputs are off by 0, 1, 2, 3 and >= 4 ulps."""


@dataclass(frozen=True)
class Fp32Report:
    """Float32 output scored against float64 GELU on float32 inputs."""

    n_inputs: int
    n_rel_scored: int
    """Inputs with ``|GELU(x)| >= 2**-126``: scored by relative error and ulps."""
    max_ulp: int
    pct_correctly_rounded: float
    max_rel: float
    worst_x: float
    max_abs_below_normal: float
    """Largest absolute error where ``|GELU(x)| < 2**-126`` (the target there is 2**-126)."""


FP32_MIN_NORMAL = 2.0**-126


def _ordered32(y: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    b = y.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def score_fp32(
    x32: npt.NDArray[np.float32], y: npt.ArrayLike, form: GeluForm = "exact"
) -> Fp32Report:
    """Score float32 outputs ``y`` for float32 inputs ``x32`` against float64 GELU."""
    x32 = np.asarray(x32, dtype=np.float32)
    y32 = np.asarray(y).astype(np.float32)
    exact = gelu(x32.astype(np.float64), form)
    normal = np.abs(exact) >= FP32_MIN_NORMAL
    err = np.abs(y32.astype(np.float64) - exact)
    rel = err[normal] / np.abs(exact[normal])
    ulps = np.abs(_ordered32(y32) - _ordered32(exact.astype(np.float32)))[normal]
    below = err[~normal]
    i = int(np.argmax(rel)) if rel.size else 0
    return Fp32Report(
        n_inputs=int(x32.size),
        n_rel_scored=int(rel.size),
        max_ulp=int(ulps.max()) if ulps.size else 0,
        pct_correctly_rounded=100.0 * float(np.mean(ulps == 0)) if ulps.size else 100.0,
        max_rel=float(rel[i]) if rel.size else 0.0,
        worst_x=float(x32[normal][i]) if rel.size else float("nan"),
        max_abs_below_normal=float(below.max()) if below.size else 0.0,
    )


def whole_line_inputs(lo: float, hi: float, dtype: str, n_points: int) -> npt.NDArray[np.float64]:
    """Inputs for a whole-line report: dense over ``[lo, hi]`` widened by half its length,
    geometric samples of both tails out to the dtype's largest value, values near 0."""
    big = float(np.finfo(np.float16 if dtype == "float16" else np.float32).max)
    w = 0.5 * (hi - lo)
    dense = np.linspace(lo - w, hi + w, n_points)
    tail = np.geomspace(1.0, big, 2001)
    near0 = np.geomspace(2.0**-30, 1.0, 2001)
    x = np.concatenate([dense, -tail, tail, near0, -near0, [0.0]])
    return np.unique(x.astype(np.float16 if dtype == "float16" else np.float32).astype(np.float64))


@dataclass(frozen=True)
class ErrorReport:
    """Errors of one spec against float64 GELU of its form."""

    kind: str
    form: str
    domain: tuple[float, float]
    n_points: int
    max_abs: float
    mean_abs: float
    worst_x: float
    max_abs_at_codes: float | None = None
    """Table specs: the largest error at the real value of an input code."""
    fp16: Fp16UlpReport | None = None
    fp32: Fp32Report | None = None
    whole_line: bool = False
    """The inputs covered the whole real line (``domain`` is then the dtype's finite range)."""
    max_steps_vs_table: int | None = None
    """Small tables (interpolated, PWL): the largest difference, in output steps, from the full
    table of the same qparams over every input code."""
    max_steps_vs_gelu: float | None = None
    """Integer-output tables: the largest error at the input codes in output steps (the output
    scale) against float64 GELU; a full table's is at most 0.5."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["domain"] = list(self.domain)
        return d

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        lo, hi = self.domain
        out = [
            f"error vs float64 {self.form} GELU over [{lo:.6g}, {hi:.6g}] "
            f"({self.n_points} points): max {self.max_abs:.3e} at x={self.worst_x:.6g}, "
            f"mean {self.mean_abs:.3e}"
        ]
        if self.max_abs_at_codes is not None:
            out.append(f"max error at the input codes: {self.max_abs_at_codes:.3e}")
        if self.max_steps_vs_gelu is not None:
            vs_table = (
                ""
                if self.max_steps_vs_table is None
                else f"{self.max_steps_vs_table} vs the full table, "
            )
            out.append(
                f"max error at the input codes in output steps: {vs_table}"
                f"{self.max_steps_vs_gelu:.3f} vs float64 GELU"
            )
        if self.fp32 is not None:
            r = self.fp32
            out.append(
                f"fp32: {r.n_inputs} inputs: max {r.max_ulp} ulp, max rel {r.max_rel:.3e} "
                f"(x={r.worst_x:.6g}), correctly rounded {r.pct_correctly_rounded:.2f}%; below "
                f"2^-126: max abs {r.max_abs_below_normal:.3e}"
            )
        if self.fp16 is not None:
            f = self.fp16
            out.append(
                f"fp16: {f.n_inputs} inputs, {f.n_ulp_scored} scored in ulp: max {f.max_ulp} ulp "
                f"(x={f.worst_x:.6g}), mean {f.mean_ulp:.3f}, correctly rounded "
                f"{f.pct_correctly_rounded:.2f}%; below 2^-14: max abs {f.max_abs_below_normal:.3e}"
                f" ({f.n_below_normal_over} over 2^-14)"
            )
        return out


def score_fp16(
    x16: npt.NDArray[np.float16], y: npt.ArrayLike, form: GeluForm = "exact"
) -> Fp16UlpReport:
    """Score float16 outputs ``y`` for inputs ``x16`` against the correctly rounded GELU."""
    x16 = np.asarray(x16, dtype=np.float16)
    y16 = np.asarray(y).astype(np.float16)
    exact = gelu(x16.astype(np.float64), form)
    cr = exact.astype(np.float16)  # float64 -> float16 rounds correctly (to nearest even)
    normal = np.abs(exact) >= FP16_MIN_NORMAL
    ulps = ulp_distance(y16, cr)[normal]
    abs_below = np.abs(y16.astype(np.float64) - exact)[~normal]
    if ulps.size:
        i = int(np.argmax(ulps))
        worst_x = float(x16[normal][i])
        max_ulp, mean_ulp = int(ulps[i]), float(ulps.mean())
        pct = 100.0 * float(np.mean(ulps == 0))
    else:
        worst_x, max_ulp, mean_ulp, pct = float("nan"), 0, 0.0, 100.0
    hist = {str(k): int(np.sum(ulps == k)) for k in range(4)}
    hist[">=4"] = int(np.sum(ulps >= 4))
    return Fp16UlpReport(
        n_inputs=int(x16.size),
        n_ulp_scored=int(ulps.size),
        max_ulp=max_ulp,
        mean_ulp=mean_ulp,
        pct_correctly_rounded=pct,
        worst_x=worst_x,
        max_abs_below_normal=float(abs_below.max()) if abs_below.size else 0.0,
        n_below_normal_over=int(np.sum(abs_below > FP16_MIN_NORMAL)),
        ulp_histogram=hist,
    )


def error_report(
    spec: GeluApprox,
    *,
    domain: tuple[float, float] | None = None,
    n_points: int = 100_001,
) -> ErrorReport:
    """Score ``spec`` against float64 GELU over ``domain`` (default: the spec's own).

    Table specs (those with ``in_qparams``) are also scored at every input code; specs whose
    ``ulp_dtype`` is ``"float16"`` get the float16 ulp report over every float16 input.
    """
    lo, hi = domain if domain is not None else spec.domain
    ulp_dtype = getattr(spec, "ulp_dtype", None)
    whole = domain is None and bool(getattr(spec, "whole_line", False)) and ulp_dtype is not None
    x = np.linspace(lo, hi, n_points)
    if whole:
        assert ulp_dtype is not None
        x = whole_line_inputs(lo, hi, ulp_dtype, n_points)
        big = float(np.finfo(np.float16 if ulp_dtype == "float16" else np.float32).max)
        lo, hi = -big, big
    if ulp_dtype == "float16":
        x = x.astype(np.float16).astype(np.float64)  # the op only ever sees float16 inputs
    elif ulp_dtype == "float32":
        x = x.astype(np.float32).astype(np.float64)
    err = np.abs(np.asarray(spec.evaluate(x), dtype=np.float64) - gelu(x, spec.form))
    i = int(np.argmax(err))
    at_codes = steps_table = steps_gelu = None
    qp = getattr(spec, "in_qparams", None)
    if qp is not None and hasattr(spec, "output_values"):
        xc = qp.dequantize(qp.codes(), np.float64)
        g = gelu(xc, spec.form)
        at_codes = float(np.max(np.abs(spec.output_values() - g)))
        oq = getattr(spec, "out_qparams", None)
        if oq is not None:
            steps_gelu, steps_table = _steps(spec, qp, oq, g)
    fp16 = fp32 = None
    if ulp_dtype == "float16":
        x16 = fp16_inputs(lo, hi)
        fp16 = score_fp16(x16, spec.evaluate(x16), spec.form)
    elif ulp_dtype == "float32":
        x32 = x.astype(np.float32)
        fp32 = score_fp32(x32, spec.evaluate(x32), spec.form)
    return ErrorReport(
        kind=spec.kind,
        form=spec.form,
        domain=(float(lo), float(hi)),
        n_points=int(x.size),
        max_abs=float(err[i]),
        mean_abs=float(err.mean()),
        worst_x=float(x[i]),
        max_abs_at_codes=at_codes,
        fp16=fp16,
        fp32=fp32,
        whole_line=whole,
        max_steps_vs_table=steps_table,
        max_steps_vs_gelu=steps_gelu,
    )


def _steps(
    spec: GeluApprox, qp: Any, oq: Any, g: npt.NDArray[np.float64]
) -> tuple[float, int | None]:
    """Output-step errors of an integer-output table spec at every input code: against float64
    GELU and (specs with a ``full_table``, i.e. small tables) against the full table."""
    from gelu_quant.lut.table import build_lut

    values = np.asarray(spec.output_values(), dtype=np.float64)  # type: ignore[attr-defined]
    vs_gelu = float(np.max(np.abs(values - g)) / np.float64(oq.scale))
    if not hasattr(spec, "full_table"):
        return vs_gelu, None
    full = build_lut(in_qparams=qp, out_qparams=oq, out_dtype=oq.dtype, form=spec.form).table
    codes = np.asarray(spec.full_table()).astype(np.int64)
    return vs_gelu, int(np.max(np.abs(codes - full.astype(np.int64))))
