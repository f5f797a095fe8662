"""Interpolated small tables against an independent integer re-implementation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gelu_quant.errors import SpecError
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.lut.table import build_lut


def gelu(x: float) -> float:
    return x * 0.5 * math.erfc(-x / math.sqrt(2.0))


@pytest.mark.parametrize("n", [16, 32, 64, 128])
@pytest.mark.parametrize(
    ("lo", "hi", "in_dt", "out_dt"), [(-8, 8, "int8", "int8"), (-9.2, 4.1, "uint8", "int16")]
)
def test_entries_match_integer_oracle(
    n: int, lo: float, hi: float, in_dt: str, out_dt: str
) -> None:
    spec = build_interp_lut(segments=n, in_range=(lo, hi), in_dtype=in_dt, out_dtype=out_dt)  # type: ignore[arg-type]
    qi, qo = spec.in_qparams, spec.out_qparams
    step = 256 // n
    # knots: GELU's output code at input codes qmin + k*step (one virtual code past qmax)
    knots = []
    for k in range(n + 1):
        x = (qi.qmin + k * step - qi.zero_point) * qi.scale
        knots.append(max(qo.qmin, min(qo.qmax, round(gelu(x) / qo.scale) + qo.zero_point)))
    assert spec.knots.tolist() == knots
    want = []
    for q in range(qi.qmin, qi.qmax + 1):
        u = q - qi.qmin
        k, f = divmod(u, step)
        num = knots[k] * step + (knots[k + 1] - knots[k]) * f + step // 2
        want.append(max(qo.qmin, min(qo.qmax, num // step)))  # Python // floors
    assert spec.full_table().tolist() == want


def test_more_segments_are_no_worse_than_fewer() -> None:
    errs = [
        error_report(build_interp_lut(segments=n, in_range=(-8, 8))).max_abs_at_codes
        for n in (16, 32, 64, 128)
    ]
    assert errs == sorted(errs, reverse=True)
    full = error_report(build_lut(in_range=(-8, 8))).max_abs_at_codes
    assert full is not None and errs[-1] is not None and full <= errs[-1]


def test_json_round_trip_and_bad_sizes() -> None:
    spec = build_interp_lut(segments=32, in_range=(-3, 6), form="tanh")
    assert spec_from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(SpecError):
        build_interp_lut(segments=20, in_range=(-3, 6))
    with pytest.raises(SpecError):
        build_interp_lut(segments=16, in_range=(-3, 6), in_dtype="int16")
    with pytest.raises(SpecError):
        spec.lookup(np.array([1], np.uint8))
