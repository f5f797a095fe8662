"""Cutting GELU's negative tail off a table's input range: outputs below the cut unchanged
(integer outputs: exactly), finer codes above it. The oracle is the uncut table itself and
float64 GELU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import SpecError
from gelu_quant.lut.table import build_lut
from gelu_quant.lut.tails import cut_range, negative_tail_cut
from gelu_quant.numerics import gelu


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    st.floats(0.3, 40.0),
    st.floats(-60.0, -4.0),
    st.sampled_from(["exact", "tanh"]),
    st.sampled_from(["int8", "uint8"]),
)
def test_integer_tables_agree_below_the_cut(hi: float, lo: float, form: str, dt: str) -> None:
    cut = negative_tail_cut(hi, in_dtype=dt, out_dtype=dt, form=form)  # type: ignore[arg-type]
    assert lo < cut < -0.75
    full = build_lut(in_range=(lo, hi), in_dtype=dt, out_dtype=dt, form=form)  # type: ignore[arg-type]
    short = build_lut(in_range=(cut, hi), in_dtype=dt, out_dtype=dt, form=form)  # type: ignore[arg-type]
    below = np.linspace(lo, cut, 4001, dtype=np.float32)
    assert np.array_equal(full.evaluate(below), short.evaluate(below))
    assert np.all(full.evaluate(below) == 0.0)
    # above the cut the inputs get finer codes: the error against float64 GELU shrinks
    above = np.linspace(cut, hi, 20001, dtype=np.float32)
    ref = gelu(above.astype(np.float64), form)  # type: ignore[arg-type]
    err_full = np.mean((full.evaluate(above) - ref) ** 2)
    err_short = np.mean((short.evaluate(above) - ref) ** 2)
    assert err_short <= err_full


def test_float_outputs_cut_where_the_tail_is_below_the_input_step() -> None:
    hi = 12.0
    cut = negative_tail_cut(hi, out_dtype="float16")
    step = (hi - cut) / 255
    assert abs(gelu(np.array([cut]))[0]) <= step / 8 * (1 + 1e-9)
    assert abs(gelu(np.array([cut * 0.98]))[0]) > step / 8  # not cut further out than needed


def test_cut_range_keeps_ranges_that_do_not_reach_the_tail() -> None:
    assert cut_range(-0.6, 0.6) == (-0.6, 0.6)
    lo, hi = cut_range(-17.2, 24.76)
    assert hi == 24.76 and -3.0 < lo < -2.0
    assert cut_range(-3.0, -1.0) == (-3.0, -1.0)
    with pytest.raises(SpecError, match="positive"):
        negative_tail_cut(0.0)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    st.floats(0.3, 40.0),
    st.floats(-60.0, -1.0),
    st.sampled_from(["exact", "tanh", "quick"]),
    st.sampled_from([6, 5, 4, 3]),
)
def test_low_bit_cut_is_where_the_tail_rounds_to_zero(
    hi: float, lo: float, form: str, bits: int
) -> None:
    """With low-bit codes the cut is computed at those widths: the table over the cut range gives
    0 below the cut, where float64 GELU is within half an output step of 0 (so 0 is GELU's own
    output code there), and the cut is no lower than the 8-bit one."""
    kw = {"form": form, "in_bits": bits, "out_bits": bits}
    cut = negative_tail_cut(hi, **kw)  # type: ignore[arg-type]
    assert cut >= negative_tail_cut(hi, form=form) - 1e-9  # type: ignore[arg-type]
    want = (lo, hi) if lo >= cut else (cut, hi)
    assert cut_range(lo, hi, **kw) == want  # type: ignore[arg-type]
    short = build_lut(in_range=(cut, hi), **kw)  # type: ignore[arg-type]
    assert short.table.size == 2**bits and short.out_qparams is not None
    below = np.linspace(min(lo, cut), cut, 4001, dtype=np.float32)
    assert np.all(short.evaluate(below) == 0.0)
    g = gelu(below.astype(np.float64), form)  # type: ignore[arg-type]
    assert np.all(np.abs(g) <= 0.5 * short.out_qparams.scale)
