"""Baselines: float64 oracles for the formulas, scalar re-implementations of the op sequences,
I-BERT's i-GELU against integer arithmetic done by hand, JSON, error reports, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import SpecError
from gelu_quant.lut.baselines import IGeluSpec, QuickGeluSpec, TanhGeluSpec
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.export import c_header, spec_json_text
from gelu_quant.lut.spec import spec_from_json


def gelu64(x: float) -> float:
    return x * 0.5 * math.erfc(-x / math.sqrt(2.0))


def tanh64(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def quick64(x: float) -> float:
    z = 1.702 * x
    return x / (1.0 + math.exp(-z)) if z > -700 else 0.0


GRID = np.linspace(-8, 8, 4001)


# -- float formulas ----------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "oracle"), [(TanhGeluSpec, tanh64), (QuickGeluSpec, quick64)])
def test_float32_formulas_match_float64(cls, oracle):
    spec = cls(-8, 8, io_dtype="float32", compute_dtype="float32")
    y = spec.evaluate(GRID).astype(np.float64)
    want = np.array([oracle(v) for v in GRID.astype(np.float32).astype(np.float64)])
    assert np.max(np.abs(y - want)) < 1e-5


@pytest.mark.parametrize(("cls", "oracle"), [(TanhGeluSpec, tanh64), (QuickGeluSpec, quick64)])
def test_report_shows_the_formula_vs_erf_error(cls, oracle):
    spec = cls(-8, 8, io_dtype="float32", compute_dtype="float32")
    rep = error_report(spec)
    x = np.linspace(-8, 8, rep.n_points).astype(np.float32).astype(np.float64)
    want = max(abs(oracle(v) - gelu64(v)) for v in x)
    assert rep.max_abs == pytest.approx(want, rel=1e-3, abs=1e-6)
    assert rep.form == "exact"


def test_known_formula_errors():
    # tanh vs erf GELU differ by ~1e-3 at most; QuickGELU by ~2e-2 (independent of the spec code)
    x = np.linspace(-8, 8, 16001)
    assert 1e-4 < max(abs(tanh64(v) - gelu64(v)) for v in x) < 1e-3
    assert 1e-2 < max(abs(quick64(v) - gelu64(v)) for v in x) < 3e-2


def tanh_fp16_scalar(x: float) -> float:
    h = np.float16
    v = h(x)
    x3 = h(h(v * v) * v)
    w = h(h(math.sqrt(2 / math.pi)) * h(v + h(h(0.044715) * x3)))
    s = h(h(1.0) + h(math.tanh(float(w))))
    return float(h(h(h(0.5) * v) * s))


def quick_fp16_scalar(x: float) -> float:
    h = np.float16
    v = h(x)
    e = h(math.exp(-float(h(h(1.702) * v))))
    return float(h(v * h(h(1.0) / h(h(1.0) + e))))


@pytest.mark.parametrize(
    ("cls", "scalar"), [(TanhGeluSpec, tanh_fp16_scalar), (QuickGeluSpec, quick_fp16_scalar)]
)
def test_fp16_arithmetic_is_the_documented_sequence(cls, scalar):
    """Bit for bit, although the scalar takes tanh/exp from Python's math module and the spec
    from numpy: both are float64 values rounded once to float16, and the next test shows that
    no float16 argument's tanh or exp lies near a float16 rounding midpoint."""
    spec = cls(-8, 8, io_dtype="float16", compute_dtype="float16")
    x = np.random.default_rng(5).uniform(-8, 8, 500).astype(np.float16)
    with np.errstate(all="ignore"):
        want = np.array([scalar(float(v)) for v in x], dtype=np.float16)
    assert np.array_equal(spec.evaluate(x).view(np.uint16), want.view(np.uint16))
    assert spec.ulp_dtype == "float16"
    assert error_report(spec).fp16 is not None


@pytest.mark.parametrize(("fn", "mfn"), [(np.tanh, math.tanh), (np.exp, math.exp)])
def test_float16_tanh_and_exp_are_correctly_rounded_on_every_argument(fn, mfn):
    """The specs' float16 tanh/exp (float64, rounded once) are correctly rounded: for every
    finite float16 argument the float64 value is more than 2^-40 (relative) from the nearest
    float16 rounding midpoint, far more than the error of numpy's or libm's float64 tanh and
    exp (a few float64 ulps, 2^-52), so the exact value rounds to the same float16."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    a = bits.view(np.float16)
    a = a[np.isfinite(a)].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = fn(a)
        r = v.astype(np.float16)
        # neighbours of r; 65536 stands for the first value past the largest float16
        up = np.nextafter(r, np.float16(np.inf)).astype(np.float64)
        up = np.where(r == np.finfo(np.float16).max, 65536.0, up)
        down = np.nextafter(r, np.float16(-np.inf)).astype(np.float64)
        r64 = r.astype(np.float64)
        gap = np.minimum(np.abs(v - (r64 + up) / 2), np.abs(v - (r64 + down) / 2))
    finite = np.isfinite(r)
    assert np.all((gap > 2.0**-40 * np.abs(v))[finite])
    assert np.all(v[~finite] > 65520.0 * (1 + 2.0**-40))  # overflows: clear of the threshold
    # and libm's float64 values round to the same float16 as numpy's
    with np.errstate(over="ignore"):
        m = np.array([mfn(t) if t < 700 or fn is np.tanh else math.inf for t in a])
        m = m.astype(np.float16)
    assert np.array_equal(m.view(np.uint16), r.view(np.uint16))


# -- i-GELU ------------------------------------------------------------------------------------


def test_igelu_constants_by_hand():
    # int8 on [-8, 8]: S = float32(8/127) = 0.06299212574958801, S_e = S/sqrt(2) = 0.04454216,
    # b/S_e = -39.715 -> q_b = -40; 1/(a S_e^2) = -1745.26 -> q_c = -1746; q_1 = q_c (no shift)
    k = IGeluSpec(-8, 8, in_bits=8).constants
    assert k.scale == 0.06299212574958801
    assert (k.q_b, k.q_c, k.q_1, k.shift_bits) == (-40, -1746, -1746, 0)


@pytest.mark.parametrize(
    ("x", "q_out"),
    [
        # x = 1: q = 16; min(16, 40) - 40 = -24; 576 - 1746 = -1170; -1170 - 1746 = -2916; *16
        (1.0, -46656),
        # x = -1: q = -16; sign flips q_L: +1170; 1170 - 1746 = -576; * -16
        (-1.0, 9216),
        # x = 3: q = 48 clipped to 40: q_L = q_c = -1746; -1746 - 1746 = -3492; * 48
        (3.0, -167616),
        # x = -3: erf saturates at -1: +1746 - 1746 = 0
        (-3.0, 0),
        (0.0, 0),
    ],
)
def test_igelu_hand_computed_values(x, q_out):
    spec = IGeluSpec(-8, 8, in_bits=8)
    s_out = spec.constants.scale * (-0.2888 * (spec.constants.scale / math.sqrt(2)) ** 2) / 2
    got = float(spec.evaluate(np.array([x]))[0])
    assert got == pytest.approx(q_out * s_out, rel=1e-6, abs=1e-12)
    assert abs(got - gelu64(x)) < 0.06


def igelu_reference(x: float, lo: float, hi: float, bits: int, shift: int) -> float:
    """Independent integer i-GELU (paper Algorithms 1-2, with I-BERT's code's right shift)."""
    qmax = 2 ** (bits - 1) - 1
    s = float(np.float32(max(abs(lo), abs(hi)) / qmax))
    q = int(np.rint(np.float32(x) / np.float32(s)))
    q = max(-qmax - 1, min(qmax, q))
    s_e = s / math.sqrt(2)
    q_b = math.floor(-1.769 / s_e)
    q_c = math.floor(1 / (-0.2888 * s_e**2))
    sign = (q > 0) - (q < 0)
    q_l = (min(abs(q), -q_b) + q_b) ** 2 + q_c
    q_erf = (sign * q_l) >> shift  # arithmetic shift = floor division by 2^shift
    s_erf = -0.2888 * s_e**2 * 2**shift
    q_1 = math.floor(1 / s_erf)
    q_out = q * (q_erf + q_1)
    for v in (q_l, q_erf + q_1, q_out):
        assert abs(v) < 2**31
    return float(np.float32(q_out * (s * s_erf / 2)))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    x=st.floats(-20, 20, allow_nan=False),
    hi=st.floats(1, 16, allow_nan=False),
    bits=st.sampled_from([8, 16]),
)
def test_igelu_matches_integer_reference(x, hi, bits):
    if bits == 16:
        hi += 1.0  # below ~1.9, floor(1/(a S_e^2)) itself leaves int32 (see the next test)
    spec = IGeluSpec(-hi, hi, in_bits=bits)
    want = igelu_reference(x, -hi, hi, bits, spec.shift_bits)
    assert float(spec.evaluate(np.array([x]))[0]) == want


def test_igelu_refuses_scales_whose_constants_leave_int32():
    # int16 on [-1, 1]: S_e = 2.16e-5, 1/(0.2888 S_e^2) = 7.4e9 > 2^31
    s_e = float(np.float32(1 / 32767)) / math.sqrt(2)
    assert 1 / (0.2888 * s_e**2) > 2**31
    with pytest.raises(SpecError, match="int32"):
        IGeluSpec(-1, 1, in_bits=16)


def test_igelu_shift_is_the_smallest_that_fits_int32():
    spec = IGeluSpec(-8, 8, in_bits=16)
    n = spec.shift_bits
    assert n > 0
    qmax = 32767
    s_e = spec.constants.scale / math.sqrt(2)
    # the worst product is at the largest code, where erf ~ +1: q * (q_erf + q_1) ~ q * 2 q_c
    q_c = math.floor(1 / (-0.2888 * s_e**2))
    q_b = math.floor(-1.769 / s_e)
    q_l = (min(qmax, -q_b) + q_b) ** 2 + q_c
    worst = [
        abs(qmax * ((q_l >> m) + math.floor(1 / (-0.2888 * s_e**2 * 2**m)))) for m in (n - 1, n)
    ]
    assert worst[0] >= 2**31 > worst[1]
    with pytest.raises(SpecError):
        IGeluSpec(-8, 8, in_bits=16, shift_bits=n - 1)


def test_igelu_error_is_what_ibert_reports():
    # I-BERT's erf polynomial is good to ~2e-2 on GELU; the int8 input quantization adds ~S/2
    rep16 = error_report(IGeluSpec(-8, 8, in_bits=16))
    rep8 = error_report(IGeluSpec(-8, 8, in_bits=8))
    assert 5e-3 < rep16.max_abs < 2.5e-2
    assert rep16.max_abs < rep8.max_abs < 0.1


# -- common ------------------------------------------------------------------------------------

SPECS = [
    TanhGeluSpec(-8, 8),
    TanhGeluSpec(-4, 6, io_dtype="float32", compute_dtype="float32"),
    QuickGeluSpec(-8, 8, compute_dtype="float32"),
    IGeluSpec(-8, 8),
    IGeluSpec(-6, 3, in_bits=16, io_dtype="float16"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.summary()[:40])
def test_json_round_trip_and_c_header(spec):
    back = spec_from_json(json.loads(spec_json_text(spec)))
    assert back == spec
    assert spec_json_text(back) == spec_json_text(spec)
    assert "#endif" in c_header(spec)
    x = np.linspace(-10, 10, 101)
    assert np.array_equal(back.evaluate(x), spec.evaluate(x))


def test_igelu_json_rejects_tampered_constants():
    doc = json.loads(spec_json_text(IGeluSpec(-8, 8)))
    doc["q_c"] += 1
    with pytest.raises(SpecError):
        spec_from_json(doc)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TanhGeluSpec(1, 1),
        lambda: QuickGeluSpec(-1, 1, io_dtype="float64"),
        lambda: TanhGeluSpec(-1, 1, form="tanh"),
        lambda: IGeluSpec(-1, 1, in_bits=4),
        lambda: IGeluSpec(2, 1),
    ],
)
def test_bad_arguments(make):
    with pytest.raises(SpecError):
        make()


def test_cli_baseline():
    from gelu_quant.cli.main import main

    r = CliRunner().invoke(main, ["approx", "baseline", "igelu", "--range", "-8", "8", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert spec_from_json(doc["spec"]) == IGeluSpec(-8, 8, io_dtype="float16")
    assert doc["report"]["fp16"]["max_ulp"] > 100
    r = CliRunner().invoke(main, ["approx", "baseline", "tanh", "--range", "-8", "8"])
    assert r.exit_code == 0 and r.output.startswith("tanh-formula:")
    r = CliRunner().invoke(main, ["approx", "baseline", "quick", "--range", "3", "-3"])
    assert r.exit_code == 2
