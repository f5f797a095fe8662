"""Where a table's input range may start: GELU's negative tail, cut where it no longer matters.

Below its minimum (x ≈ −0.75) GELU rises back towards 0: GELU(−4) = −1.3e−4. Inputs far out in
that tail all produce (almost) the same output, yet a min/max input range spends codes on them
— all-MiniLM-L6-v2's GELU inputs reach −17 while GELU is within 1e−5 of 0 below −4.5. Cutting
the input range at the point where the tail stops mattering costs nothing and gives every other
input finer codes:

* **integer outputs**: below the cut every input's table entry is the output code of 0 (GELU is
  within a quarter output step of 0 there), exactly as it was with the uncut range, so the cut
  changes no output for inputs below it and only refines those above;
* **float outputs**: the tail's |GELU| is at most an eighth of the input step, below the error
  input rounding causes elsewhere in the range.

:func:`negative_tail_cut` finds that point for a given upper end; :func:`cut_range` applies it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gelu_quant.errors import SpecError
from gelu_quant.lut.table import OutDType, build_lut
from gelu_quant.numerics import GeluForm, gelu, gelu_output_range
from gelu_quant.qparams import QDType, QParams

_FLOAT_OUT = ("float16", "float32")


@functools.cache
def _argmin(form: GeluForm) -> float:
    xs = np.linspace(-3.0, 0.0, 30001)
    return float(xs[int(np.argmin(gelu(xs, form)))])


@functools.lru_cache(maxsize=1 << 14)
def _tail_point(tol: float, form: GeluForm) -> float:
    """The x < argmin where |GELU(x)| = tol (GELU is monotone there), by bisection."""
    lo, hi = -60.0, _argmin(form)
    if abs(float(gelu(np.array([hi]), form)[0])) <= tol:
        return hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:  # converged to adjacent floats: later steps change nothing
            break
        if abs(float(gelu(np.array([mid]), form)[0])) <= tol:
            lo = mid
        else:
            hi = mid
    return lo


@functools.lru_cache(maxsize=1 << 16)  # grouped tables ask once per channel
def negative_tail_cut(
    hi: float,
    *,
    in_dtype: QDType = "int8",
    out_dtype: OutDType = "int8",
    form: GeluForm = "exact",
    in_bits: int | None = None,
    out_bits: int | None = None,
) -> float:
    """The lowest input a table over ``[cut, hi]`` needs (see the module docstring); ``hi > 0``.

    For integer outputs the returned cut is checked: the table built over ``[cut, hi]`` maps
    its lowest input code to the output code of 0. ``in_bits`` / ``out_bits``: low-bit codes
    (2..8) in the 8-bit container; coarser output codes allow a higher cut.
    """
    if not (math.isfinite(hi) and hi > 0.0):
        raise SpecError(f"the upper end of the range must be positive and finite, got {hi}")
    iq1 = QParams(1.0, 0, in_dtype, in_bits)
    n_in = iq1.qmax - iq1.qmin
    if out_dtype in _FLOAT_OUT:
        cut = -hi
        for _ in range(8):  # the input step depends on the cut: iterate to a fixed point
            new = _tail_point((hi - cut) / n_in / 8.0, form)
            if new == cut:  # reached: the remaining iterations would return it again
                break
            cut = new
        return cut
    out_lo, out_hi = gelu_output_range(-60.0, hi, form)
    oq1 = QParams(1.0, 0, out_dtype, out_bits)  # type: ignore[arg-type]
    n_out = oq1.qmax - oq1.qmin
    cut = _tail_point((out_hi - out_lo) / n_out / 4.0, form)
    for _ in range(60):
        spec = build_lut(
            in_range=(cut, hi),
            in_dtype=in_dtype,
            out_dtype=out_dtype,
            form=form,
            in_bits=in_bits,
            out_bits=out_bits,
        )
        oq = spec.out_qparams
        assert oq is not None
        if int(spec.table[0]) == oq.zero_point:
            return float(spec.in_qparams.real_range[0])
        cut *= 1.05
    raise SpecError(f"no negative-tail cut found for hi={hi}")  # pragma: no cover


def cut_range(
    lo: float,
    hi: float,
    *,
    in_dtype: QDType = "int8",
    out_dtype: OutDType = "int8",
    form: GeluForm = "exact",
    in_bits: int | None = None,
    out_bits: int | None = None,
) -> tuple[float, float]:
    """``[max(lo, cut), hi]``: the calibrated range with GELU's irrelevant negative tail cut
    (``in_bits`` / ``out_bits``: the table's code widths, see :func:`negative_tail_cut`)."""
    if hi <= 0.0:
        return lo, hi
    cut = negative_tail_cut(
        hi, in_dtype=in_dtype, out_dtype=out_dtype, form=form, in_bits=in_bits, out_bits=out_bits
    )
    return max(lo, cut), hi
