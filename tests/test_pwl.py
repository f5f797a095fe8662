"""Non-uniform PWL tables against oracles written in the tests: the integer arithmetic code by
code in Python integers, the full table in float64 ``math``, brute-force optimal partitions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from _pwl_oracle import full_table, gelu64, pwl_codes
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import SpecError
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.pwl import (
    PWL_SIZES,
    PwlLutSpec,
    build_pwl_lut,
    chebyshev_line,
    optimal_breakpoints,
)
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.qparams import QParams

FORMS = ["exact", "tanh", "quick"]
#: MiniLM-like (min/max and tail-cut entropy), narrow, asymmetric, mostly positive
RANGES = [(-17.0, 25.0), (-4.3, 9.8), (-3.0, 3.0), (-9.0, 4.5), (-0.8, 14.0)]


def steps_vs_table(spec: PwlLutSpec) -> int:
    p = spec.payload()
    want = full_table(p["in_qparams"], p["out_qparams"], spec.form)
    return int(np.max(np.abs(spec.full_table().astype(np.int64) - np.array(want))))


DTYPE_CASES = [
    ((-9.0, 4.5), "int8", "int8"),
    ((-4.0, 8.0), "uint8", "uint8"),
    ((-6.0, 6.0), "int8", "int16"),
]


@pytest.mark.parametrize("segments", PWL_SIZES)
@pytest.mark.parametrize("case", range(len(DTYPE_CASES)))
def test_lookup_is_the_stated_integer_arithmetic(segments: int, case: int) -> None:
    rng, in_dt, out_dt = DTYPE_CASES[case]
    form = FORMS[(case + segments) % 3]
    spec = build_pwl_lut(
        segments=segments, in_range=rng, in_dtype=in_dt, out_dtype=out_dt, form=form
    )  # type: ignore[arg-type]
    assert spec.segments == segments
    p = json.loads(json.dumps(spec.to_json()))
    codes = range(spec.in_qparams.qmin, spec.in_qparams.qmax + 1)
    assert spec.full_table().tolist() == pwl_codes(p, codes)
    assert spec_from_json(p) == spec
    x = np.random.default_rng(1).uniform(rng[0] - 1, rng[1] + 1, 5000)
    want = np.array(pwl_codes(p, spec.in_qparams.quantize(x).astype(int).tolist()))
    np.testing.assert_array_equal(spec.evaluate(x), spec.out_qparams.dequantize(want, np.float32))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rng", RANGES)
def test_16_segments_within_one_step_of_the_full_table(form: str, rng: tuple[float, float]) -> None:
    err16 = steps_vs_table(build_pwl_lut(segments=16, in_range=rng, form=form))  # type: ignore[arg-type]
    assert err16 <= 1
    # and better than uniform knots with the same number of segments
    uniform = build_interp_lut(segments=16, in_range=rng, form=form)  # type: ignore[arg-type]
    p = uniform.payload()
    want = np.array(full_table(p["in_qparams"], p["out_qparams"], form))
    assert err16 <= int(np.max(np.abs(uniform.full_table().astype(int) - want)))


@pytest.mark.parametrize("form", FORMS)
def test_64_segments_reproduce_the_full_table(form: str) -> None:
    for rng in RANGES[:2]:
        assert steps_vs_table(build_pwl_lut(segments=64, in_range=rng, form=form)) == 0  # type: ignore[arg-type]


def test_error_report_in_output_steps() -> None:
    spec = build_pwl_lut(segments=8, in_range=(-3.0, 3.0), form="tanh")
    rep = error_report(spec)
    assert rep.max_steps_vs_table == steps_vs_table(spec) == 1
    oq = spec.out_qparams
    codes = spec.in_qparams.codes().astype(int)
    x = (codes - spec.in_qparams.zero_point) * spec.in_qparams.scale
    g = np.array([gelu64(float(v), "tanh") for v in x])
    got = (spec.full_table().astype(int) - oq.zero_point) * oq.scale
    assert rep.max_steps_vs_gelu == pytest.approx(np.max(np.abs(got - g)) / oq.scale, rel=1e-9)
    assert any("1 vs the full table" in line for line in rep.lines())
    assert rep.to_json()["max_steps_vs_table"] == 1


@settings(max_examples=12, deadline=None)
@given(
    lo=st.floats(-20.0, -0.5),
    hi=st.floats(0.5, 30.0),
    form=st.sampled_from(FORMS),
    dtype=st.sampled_from(["int8", "uint8"]),
)
def test_property_16_segments_within_one_step(lo: float, hi: float, form: str, dtype: str) -> None:
    spec = build_pwl_lut(segments=16, in_range=(lo, hi), in_dtype=dtype, out_dtype=dtype, form=form)  # type: ignore[arg-type]
    assert steps_vs_table(spec) <= 1


def _cheb_brute(x: np.ndarray, y: np.ndarray) -> float:
    """Minimax line error by brute force: the optimal slope is one through two of the points."""
    if x.size <= 2:
        return 0.0
    best = np.inf
    for i, j in itertools.combinations(range(x.size), 2):
        m = (y[j] - y[i]) / (x[j] - x[i])
        r = y - m * x
        best = min(best, (r.max() - r.min()) / 2)
    return float(best)


def test_chebyshev_line_and_breakpoints_are_optimal() -> None:
    rng = np.random.default_rng(5)
    for trial in range(6):
        n = 14
        x = np.arange(n, dtype=np.float64)
        y = np.round(np.cumsum(rng.normal(0, 2, n)) + 0.3 * x**2 * (trial % 2))
        m, b, e = chebyshev_line(x, y)
        assert e == pytest.approx(_cheb_brute(x, y), abs=1e-9)
        assert np.max(np.abs(y - (b + m * (x - x[0])))) == pytest.approx(e, abs=1e-9)
        for s in (2, 3, 4):
            starts = optimal_breakpoints(x, y, s)
            assert starts[0] == 0 and len(starts) <= s
            bounds = [*starts, n]
            got = max(_cheb_brute(x[a:b_], y[a:b_]) for a, b_ in itertools.pairwise(bounds))
            brute = min(
                max(_cheb_brute(x[a:b_], y[a:b_]) for a, b_ in itertools.pairwise(cut))
                for inner in itertools.combinations(range(1, n), s - 1)
                for cut in [(0, *inner, n)]
            )
            assert got == pytest.approx(brute, abs=1e-6), (trial, s)


@pytest.mark.parametrize(("out_dt", "bound"), [("int8", 1), ("int16", 64)])
def test_int16_input(out_dt: str, bound: int) -> None:
    spec = build_pwl_lut(segments=32, in_range=(-10.0, 12.0), in_dtype="int16", out_dtype=out_dt)  # type: ignore[arg-type]
    p = spec.payload()
    codes = range(-32768, 32768)
    got = spec.full_table()
    assert got.size == 65536 and got.tolist() == pwl_codes(p, codes)
    # int16 output steps are 256x finer than int8's: 64 of them are a quarter of an int8 step
    assert steps_vs_table(spec) <= bound


def _spec(**kw: object) -> PwlLutSpec:
    base = {
        "in_qparams": QParams(0.05, 0, "int8"),
        "out_qparams": QParams(0.03, -100, "int8"),
        "form": "exact",
        "starts": np.array([-128, 0], np.int32),
        "bases": np.array([0, 1 << 15], np.int32),
        "slopes": np.array([0, 1 << 16], np.int32),
        "shift": 16,
    }
    base.update(kw)
    return PwlLutSpec(**base)  # type: ignore[arg-type]


def test_refusals() -> None:
    assert _spec().lookup(np.array([-128, 0, 1, 127], np.int8)).tolist() == [0, 0, 1, 127]
    with pytest.raises(SpecError, match="begin at the input's qmin"):
        _spec(starts=np.array([-127, 0], np.int32))
    with pytest.raises(SpecError, match="ascend strictly"):
        _spec(starts=np.array([-128, -128], np.int32))
    with pytest.raises(SpecError, match="overflow"):
        _spec(slopes=np.array([0, 2**25], np.int32))  # 127 * 2**25 >= 2**31
    with pytest.raises(SpecError, match="int32"):
        _spec(bases=np.array([0, 1], np.int64))
    with pytest.raises(SpecError, match="one entry per segment"):
        _spec(bases=np.array([0], np.int32))
    with pytest.raises(SpecError, match="shift 25"):
        _spec(shift=25)
    with pytest.raises(SpecError, match="full-width"):
        _spec(in_qparams=QParams(0.5, 0, "int8", 4))
    with pytest.raises(SpecError, match="int8, uint8 or int16"):
        build_pwl_lut(segments=16, in_range=(-3, 3), out_dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="segments must be one of"):
        build_pwl_lut(segments=12, in_range=(-3, 3))
    with pytest.raises(SpecError, match="not both"):
        build_pwl_lut(segments=16, in_range=(-3, 3), in_qparams=QParams(0.1, 0, "int8"))
    with pytest.raises(SpecError, match="input codes must be int8"):
        _spec().lookup(np.array([1], np.uint8))
