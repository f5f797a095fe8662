"""Piecewise polynomials: exact float16 scoring against an oracle written here, the documented
operation sequence re-implemented scalar by scalar, tails, JSON, bad arguments, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import SpecError
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.export import c_header, spec_json_text
from gelu_quant.lut.poly import PolySpec, build_poly
from gelu_quant.lut.spec import spec_from_json

# -- independent oracle -------------------------------------------------------------------------


def all_fp16(lo: float, hi: float) -> np.ndarray:
    """Every finite float16 in [lo, hi], from bit patterns (one zero)."""
    bits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    v = bits.view(np.float16)
    v = v[np.isfinite(v) & ~((v == 0) & (bits >> 15 == 1))]
    v = np.sort(v[(v >= lo) & (v <= hi)])
    return v


def gelu64(x: float) -> float:
    return x * 0.5 * math.erfc(-x / math.sqrt(2.0))


def key16(v: np.ndarray) -> np.ndarray:
    """Integers whose differences count float16 steps (sign-magnitude to two's complement)."""
    b = v.astype(np.float16).view(np.uint16).astype(np.int64)
    return np.where(b >= 0x8000, -(b - 0x8000), b)


def oracle_score(x16: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Max ulp and % correctly rounded where |GELU| >= 2^-14; max abs error below."""
    exact = np.array([gelu64(float(v)) for v in x16])
    cr = exact.astype(np.float16)
    normal = np.abs(exact) >= 2.0**-14
    ulps = np.abs(key16(np.asarray(y, dtype=np.float16)) - key16(cr))[normal]
    below = np.abs(np.asarray(y, dtype=np.float64) - exact)[~normal]
    return {
        "max_ulp": int(ulps.max()),
        "pct_cr": 100.0 * float(np.mean(ulps == 0)),
        "max_abs_below": float(below.max()) if below.size else 0.0,
    }


@pytest.fixture(scope="module")
def x16() -> np.ndarray:
    return all_fp16(-8.0, 8.0)


@pytest.fixture(scope="module")
def specs() -> dict[tuple[int, int, str], PolySpec]:
    return {
        (16, 4, "float32"): build_poly(-8, 8, 16, 4, compute_dtype="float32"),
        (16, 4, "float16"): build_poly(-8, 8, 16, 4, compute_dtype="float16"),
        (32, 4, "float16"): build_poly(-8, 8, 32, 4, compute_dtype="float16"),
    }


# -- the must-show targets ---------------------------------------------------------------------


def test_fp32_arithmetic_16x4_is_within_one_ulp_and_mostly_correctly_rounded(specs, x16):
    s = oracle_score(x16, specs[16, 4, "float32"].evaluate(x16))
    assert s["max_ulp"] <= 1
    assert s["pct_cr"] >= 95.0
    assert s["max_abs_below"] <= 2.0**-14


@pytest.mark.parametrize(("segments", "limit"), [(16, 4), (32, 2)])
def test_fp16_arithmetic_targets(specs, x16, segments, limit):
    s = oracle_score(x16, specs[segments, 4, "float16"].evaluate(x16))
    assert s["max_ulp"] <= limit
    assert s["max_abs_below"] <= 2.0**-14


def test_report_agrees_with_the_oracle(specs, x16):
    spec = specs[16, 4, "float16"]
    rep = error_report(spec, domain=(-8.0, 8.0)).fp16
    assert rep is not None
    mine = oracle_score(x16, spec.evaluate(x16))
    assert rep.max_ulp == mine["max_ulp"]
    assert rep.pct_correctly_rounded == pytest.approx(mine["pct_cr"])
    assert rep.n_inputs == x16.size


def test_float32_io_relative_error_is_small():
    """Float32 fits aim at relative error wherever |GELU| >= 2^-126 (the deep tail included),
    so a small 16 x 4 spec on [-8, 8] is relatively accurate to about 1e-3 everywhere."""
    spec = build_poly(-8, 8, 16, 4, io_dtype="float32", compute_dtype="float32")
    x = np.linspace(-8, 8, 20001).astype(np.float32)
    y = spec.evaluate(x).astype(np.float64)
    exact = np.array([gelu64(float(v)) for v in x])
    rel = np.abs(y - exact) / np.maximum(np.abs(exact), 2.0**-126)
    assert rel.max() < 2e-3
    assert spec.evaluate(np.float32(0.0)) == 0.0


def test_tanh_form_is_fitted_to_the_tanh_gelu():
    spec = build_poly(-6, 6, 16, 4, compute_dtype="float32", form="tanh")
    x = all_fp16(-6, 6)
    exact = np.array(
        [
            0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
            for v in x.astype(np.float64)
        ]
    )
    y = spec.evaluate(x)
    normal = np.abs(exact) >= 2.0**-14
    ulps = np.abs(key16(y) - key16(exact.astype(np.float16)))[normal]
    assert ulps.max() <= 1


# -- the documented operation sequence, re-implemented one scalar at a time ----------------------


def reference_scalar(spec: PolySpec, x: float) -> float:
    io = np.float16 if spec.io_dtype == "float16" else np.float32
    cp = np.float16 if spec.compute_dtype == "float16" else np.float32
    xi = io(x)
    if math.isnan(float(xi)):
        return float("nan")
    if xi < io(spec.lo):
        return 0.0
    if xi > io(spec.hi):
        return float(xi)
    k = 0
    while k + 1 < spec.segments and xi >= io(spec.breakpoints[k + 1]):
        k += 1
    t = cp(cp(xi) - cp(spec.origins[k]))
    c = [cp(v) for v in spec.coefficients[k]]
    acc = c[-1]
    for j in range(len(c) - 2, -1, -1):
        acc = cp(acc * t)
        acc = cp(acc + c[j])
    return float(io(acc))


@pytest.mark.parametrize("key", [(16, 4, "float16"), (16, 4, "float32")])
def test_evaluate_is_the_documented_op_sequence(specs, x16, key):
    spec = specs[key]
    rng = np.random.default_rng(7)
    sample = np.concatenate([rng.choice(x16, 600), np.asarray(spec.breakpoints, np.float16)])
    got = spec.evaluate(sample)
    want = np.array([reference_scalar(spec, float(v)) for v in sample], dtype=np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


def test_segments_at_zero_have_origin_zero_and_no_constant(specs):
    for spec in specs.values():
        assert 0.0 in spec.breakpoints
        for k, (a, b) in enumerate(zip(spec.breakpoints, spec.breakpoints[1:], strict=False)):
            if 0.0 in (a, b):
                assert spec.origins[k] == 0.0
                assert spec.coefficients[k, 0] == 0.0


# -- tails and special values -------------------------------------------------------------------


def test_tails_are_exact(specs):
    spec = specs[16, 4, "float16"]
    below = np.array([-8.0078125, -9.0, -100.0, -65504.0, -np.inf], dtype=np.float16)
    above = np.array([8.0078125, 9.0, 100.0, 65504.0, np.inf], dtype=np.float16)
    assert np.all(spec.evaluate(below) == 0)
    assert np.array_equal(spec.evaluate(above), above)
    assert np.isnan(spec.evaluate(np.array([np.nan], dtype=np.float16))[0])
    # the oracle says the same: |GELU| < 2^-14 below -8, GELU rounds to x above 8
    assert abs(gelu64(-8.0078125)) < 2.0**-14
    assert np.float16(gelu64(8.0078125)) == np.float16(8.0078125)


def test_shape_and_dtype_are_kept(specs):
    spec = specs[16, 4, "float32"]
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    y = spec.evaluate(x)
    assert y.shape == (2, 3, 4)
    assert y.dtype == np.float16


# -- JSON and C ----------------------------------------------------------------------------------


def test_json_round_trip_is_exact(specs):
    for spec in specs.values():
        back = spec_from_json(json.loads(spec_json_text(spec)))
        assert back == spec
        assert isinstance(back, PolySpec)
        assert back.coefficients.dtype == spec.coefficients.dtype
        assert back.coefficients.tobytes() == spec.coefficients.tobytes()
        assert spec_json_text(back) == spec_json_text(spec)


def test_json_rejects_inexact_coefficients(specs):
    doc = json.loads(spec_json_text(specs[16, 4, "float16"]))
    doc["coefficients"][3][1] += 1e-9
    with pytest.raises(SpecError):
        spec_from_json(doc)


def test_c_header_holds_the_coefficient_bits(specs):
    spec = specs[16, 4, "float16"]
    text = c_header(spec, "gq")
    first = spec.coefficients[1, 1].view(np.uint16)
    assert f"0x{int(first):04x}" in text
    assert "gq_coefficients[16][5]" in text
    assert "gq_breakpoints[17]" in text


# -- building: properties and errors ----------------------------------------------------------


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    lo=st.floats(-8, 2, allow_nan=False),
    width=st.floats(0.5, 10, allow_nan=False),
    segments=st.integers(2, 8),
    degree=st.integers(1, 4),
    mode=st.sampled_from(["uniform", "optimized"]),
)
def test_spec_invariants_and_accuracy(lo, width, segments, degree, mode):
    hi = lo + width
    spec = build_poly(lo, hi, segments, degree, compute_dtype="float32", breakpoints=mode)
    bp = spec.breakpoints
    assert spec.segments == segments
    assert bp[0] <= lo and bp[-1] >= hi
    assert all(float(np.float16(b)) == b for b in bp)
    assert list(bp) == sorted(set(bp))
    if bp[0] < 0 < bp[-1]:
        assert 0.0 in bp
    # each segment is at least as good as the Chebyshev interpolant of the same degree (up to
    # a factor 2 for the fitter's ulp weighting and the output rounding): an oracle fit here
    for k in range(spec.segments):
        a, b = bp[k], bp[k + 1]
        x = all_fp16(a, b)
        x = x[x < b] if k < spec.segments - 1 else x
        exact = np.array([gelu64(float(v)) for v in x])
        row = spec.coefficients[k].astype(np.float64)
        if not row.any():  # exact zero segment: only where 0 meets the absolute target
            assert np.all(np.abs(exact) < 2.0**-14)
            continue
        if row[1] == 1 and not np.delete(row, 1).any():  # identity segment
            assert np.array_equal(exact.astype(np.float16), x)
            continue
        w = 1.0 / np.maximum(np.abs(exact), 2.0**-14)
        nodes = (a + b) / 2 + (b - a) / 2 * np.cos(
            np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1)
        )
        if 0.0 in (a, b):  # c_0 = 0: interpolate GELU(x)/x = Phi(x) at degree nodes
            nodes = nodes[:degree]
            phi = np.polyfit(nodes, [gelu64(v) / v for v in nodes], degree - 1)
            cheb = x.astype(np.float64) * np.polyval(phi, x.astype(np.float64))
        else:
            p = np.polyfit(nodes - a, [gelu64(v) for v in nodes], degree)
            cheb = np.polyval(p, x.astype(np.float64) - a)
        mine = np.max(w * np.abs(spec.evaluate(x).astype(np.float64) - exact))
        theirs = np.max(w * np.abs(cheb - exact))
        assert mine <= 2 * theirs + 2.0**-10, (k, a, b, mine, theirs)
    top = np.float16(bp[-1] + 1)
    assert spec.evaluate(top) == top


def test_uniform_breakpoints_split_both_sides():
    spec = build_poly(-3, 5, 8, 3, breakpoints="uniform")
    assert spec.breakpoints == (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


def test_range_is_rounded_outwards_to_fp16():
    spec = build_poly(-0.1, 0.1, 2, 2)
    assert spec.lo <= -0.1 and spec.hi >= 0.1
    assert float(np.float16(spec.lo)) == spec.lo


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lo": 1.0, "hi": 1.0},
        {"lo": 2.0, "hi": 1.0},
        {"lo": -1.0, "hi": float("nan")},
        {"degree": 9},  # MAX_DEGREE is 8
        {"degree": 0},
        {"segments": 0},
        {"segments": 1},  # the range contains 0: needs a breakpoint there
        {"io_dtype": "float64"},
        {"compute_dtype": "bfloat16"},
        {"io_dtype": "float32", "compute_dtype": "float16"},
        {"form": "sigmoid"},
        {"breakpoints": "random"},
    ],
)
def test_bad_arguments(kwargs):
    args = {"lo": -4.0, "hi": 4.0, "segments": 4, "degree": 3} | kwargs
    lo, hi, k, d = args.pop("lo"), args.pop("hi"), args.pop("segments"), args.pop("degree")
    with pytest.raises(SpecError):
        build_poly(lo, hi, k, d, **args)


def test_spec_validation():
    good = {
        "form": "exact",
        "lo": -1.0,
        "hi": 1.0,
        "breakpoints": (-1.0, 0.0, 1.0),
        "origins": (0.0, 0.0),
        "coefficients": np.zeros((2, 3), dtype=np.float16),
    }
    PolySpec(**good)
    for bad in (
        {"breakpoints": (-1.0, 0.5, 1.0)},  # no breakpoint at 0
        {"breakpoints": (-1.0, 0.1, 1.0)},  # not a float16 value
        {"breakpoints": (-1.0, 1.0, 0.0)},
        {"origins": (0.0,)},
        {"coefficients": np.zeros((2, 3), dtype=np.float32)},
        {"coefficients": np.zeros((2, 10), dtype=np.float16)},  # degree 9
        {"coefficients": np.full((2, 3), np.inf, dtype=np.float16)},
    ):
        with pytest.raises(SpecError):
            PolySpec(**(good | bad))


# -- CLI -------------------------------------------------------------------------------------


def _run(args: list[str]):
    from gelu_quant.cli.main import main

    return CliRunner().invoke(main, args)


def test_cli_poly_json_and_exports(tmp_path):
    jpath, hpath = tmp_path / "p.json", tmp_path / "p.h"
    r = _run(
        [
            *("approx", "poly", "--range", "-4", "4", "--segments", "6", "--degree", "3"),
            *("--dtype", "fp16", "--compute", "fp32", "--json"),
            *("--export", "json", str(jpath), "--export", "c-header", str(hpath)),
        ]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    spec = spec_from_json(doc["spec"])
    assert isinstance(spec, PolySpec) and spec.segments == 6 and spec.degree == 3
    assert spec.compute_dtype == "float32" and spec.io_dtype == "float16"
    assert doc["report"]["fp16"]["max_ulp"] == error_report(spec).fp16.max_ulp
    assert spec_from_json(json.loads(jpath.read_text())) == spec
    assert "coefficients[6][4]" in hpath.read_text()


def test_cli_poly_text():
    r = _run(["approx", "poly", "--range", "-2", "2", "-k", "4", "-d", "2", "--dtype", "fp32"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("poly: exact GELU on [-2, 2], 4 segments of degree 2")
    assert "error vs float64" in r.output


@pytest.mark.parametrize(
    "extra",
    [
        ["--range", "2", "1", "--segments", "4", "--degree", "3", "--dtype", "fp16"],
        ["--range", "-1", "1", "--segments", "4", "--degree", "9", "--dtype", "fp16"],
        ["--range", "-1", "1", "--segments", "0", "--degree", "3", "--dtype", "fp16"],
        ["--range", "-1", "1", "--segments", "4", "--degree", "3", "--dtype", "fp8"],
        ["--range", "-1", "1", "-k", "4", "-d", "3", "--dtype", "fp32", "--compute", "fp16"],
    ],
)
def test_cli_poly_bad_arguments_exit_2(extra):
    r = _run(["approx", "poly", *extra])
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_fast_fp16_rounding_equals_numpy_float16_arithmetic():
    from gelu_quant.lut.poly_fit import round_to_fp16

    rng = np.random.default_rng(3)
    finite = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16)
    finite = np.concatenate([finite, -finite])
    a, b = rng.choice(finite, 400_000), rng.choice(finite, 400_000)
    with np.errstate(all="ignore"):
        for op in (np.multiply, np.add, np.subtract):
            want = op(a, b)  # numpy float16 arithmetic: each op rounded to float16
            got = round_to_fp16(op(a.astype(np.float32), b.astype(np.float32)))
            assert np.array_equal(got.astype(np.float16).view(np.uint16), want.view(np.uint16))


@st.composite
def random_specs(draw: st.DrawFn) -> PolySpec:
    """Arbitrary valid specs (not fitted): float16 breakpoints around 0, finite coefficients."""
    k = draw(st.integers(2, 12))
    degree = draw(st.integers(1, 4))
    io, cp = draw(
        st.sampled_from([("float16", "float16"), ("float16", "float32"), ("float32",) * 2])
    )
    vals = draw(
        st.lists(st.floats(-60, 60, width=16, allow_subnormal=False), min_size=k + 4, max_size=40)
    )
    bps = sorted({float(v) for v in vals if v != 0.0} | {0.0})
    lo_n = sum(b < 0 for b in bps)
    if lo_n == 0 or lo_n == len(bps) - 1 or len(bps) < k + 1:
        bps = [-1.0, 0.0, 1.0]
    bps = bps[: k + 1] if 0.0 in bps[: k + 1] and bps[0] < 0 else bps
    n = len(bps) - 1
    cdt = np.float16 if cp == "float16" else np.float32
    coefs = draw(
        st.lists(st.floats(-4, 4, width=16), min_size=n * (degree + 1), max_size=n * (degree + 1))
    )
    origins = draw(st.lists(st.floats(-8, 8, width=16), min_size=n, max_size=n))
    return PolySpec(
        form="exact",
        lo=bps[0],
        hi=bps[-1],
        breakpoints=tuple(bps),
        origins=tuple(float(o) for o in origins),
        coefficients=np.array(coefs, dtype=cdt).reshape(n, degree + 1),
        io_dtype=io,
        compute_dtype=cp,
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(spec=random_specs())
def test_any_spec_round_trips_and_follows_the_op_sequence(spec):
    back = spec_from_json(json.loads(spec_json_text(spec)))
    assert back == spec and back.coefficients.tobytes() == spec.coefficients.tobytes()
    x = np.concatenate(
        [np.asarray(spec.breakpoints), np.linspace(spec.lo - 1, spec.hi + 1, 41), [-0.0, np.nan]]
    ).astype(np.float16)
    with np.errstate(all="ignore"):
        got = spec.evaluate(x)
        want = np.array([reference_scalar(spec, float(v)) for v in x], dtype=got.dtype)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all()
