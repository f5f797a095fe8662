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
