"""The three GELU forms (exact, tanh, QuickGELU) end to end, and polynomials that are right on
the whole real line.

Oracles are written here: float64 formulas from ``math`` (erf, exp) one value at a time, the
float16 / float32 rounding numpy does, and models run in ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.cli.main import main
from gelu_quant.errors import ModelError
from gelu_quant.graph.convert import ConvertConfig, convert_model
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.poly import DEFAULT_SHAPES, build_exact_poly, exact_tail_domain
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.numerics import form_argmin, tail_bounds

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"


# -- float64 oracles, one value at a time ------------------------------------------------------
def _exact(v: float) -> float:
    return 0.5 * v * math.erfc(-v / math.sqrt(2.0))


def _tanh(v: float) -> float:
    w = math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)
    # 0.5 v (1 + tanh w) = v / (1 + e^{-2w}), without cancellation for w << 0
    return v / (1.0 + math.exp(-2.0 * w)) if w > -300 else 0.0


def _quick(v: float) -> float:
    z = 1.702 * v
    return v / (1.0 + math.exp(-z)) if z > -700 else 0.0


ORACLE = {"exact": _exact, "tanh": _tanh, "quick": _quick}


def oracle(x: np.ndarray, form: str) -> np.ndarray:
    f = ORACLE[form]
    return np.array([f(float(v)) for v in np.asarray(x, np.float64).ravel()]).reshape(x.shape)


def all_fp16() -> np.ndarray:
    v = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16)
    return np.concatenate([-v[:0:-1], v])


def _ordered(y: np.ndarray, bits: int) -> np.ndarray:
    it = np.int16 if bits == 16 else np.int32
    b = y.view(it).astype(np.int64)
    return np.where(b < 0, -(b & (0x7FFF if bits == 16 else 0x7FFFFFFF)), b)


# -- numerics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
def test_argmin_is_the_minimum(form: str) -> None:
    xm, ym = form_argmin(form)  # type: ignore[arg-type]
    x = np.linspace(-3.0, 0.0, 30001)
    y = oracle(x, form)
    assert ym <= y.min() + 1e-15
    assert abs(xm - x[np.argmin(y)]) < 2e-4
    assert ym == pytest.approx(ORACLE[form](xm), abs=1e-15)


@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
def test_tail_bounds_on_every_float16(form: str) -> None:
    """Below L every float16 GELU rounds to 0, above H to x; L and H themselves do not."""
    lo, hi = tail_bounds(form, "float16")  # type: ignore[arg-type]
    x = all_fp16().astype(np.float64)
    x = x[np.abs(x) < 300]
    g16 = oracle(x, form).astype(np.float16).astype(np.float64)
    assert np.all(g16[x < lo] == 0.0) and g16[x == lo][0] != 0.0
    assert np.all(g16[x > hi] == x[x > hi]) and g16[x == hi][0] != hi


@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
def test_tail_bounds_float32_near_the_crossings(form: str) -> None:
    lo, hi = tail_bounds(form, "float32")  # type: ignore[arg-type]
    for edge, step in ((lo, -1), (hi, 1)):
        e = np.float32(edge)
        beyond = [e]
        for _ in range(2000):
            beyond.append(np.nextafter(beyond[-1], np.float32(step * np.inf)))
        xs = np.array(beyond[1:], np.float32).astype(np.float64)
        g = oracle(xs, form).astype(np.float32).astype(np.float64)
        want = np.zeros_like(xs) if step < 0 else xs
        assert np.array_equal(g, want)
        at = oracle(np.array([float(e)]), form).astype(np.float32)[0]
        assert at != (0.0 if step < 0 else e)
    if form == "quick":  # x e^{1.702 x} decays slowly: far below the exact form's bound
        assert lo < tail_bounds("exact", "float32")[0] - 40


# -- default polynomials: the bounds -------------------------------------------------------------
@pytest.mark.parametrize("compute", ["float16", "float32"])
@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
def test_default_fp16_poly_within_one_ulp_on_every_float16(form: str, compute: str) -> None:
    spec = build_exact_poly(form=form, io_dtype="float16", compute_dtype=compute)  # type: ignore[arg-type]
    assert (spec.segments, spec.degree) == DEFAULT_SHAPES[("float16", compute, form)]
    assert spec.domain == exact_tail_domain(form, "float16")  # type: ignore[arg-type]
    x = all_fp16()
    y = spec.evaluate(x)
    g = oracle(x.astype(np.float64), form)
    cr = g.astype(np.float16)
    normal = np.abs(g) >= 2.0**-14
    ulp = np.abs(_ordered(y, 16) - _ordered(cr, 16))
    assert ulp[normal].max() <= 1
    assert np.abs(y.astype(np.float64) - g)[~normal].max() <= 2.0**-14


@pytest.mark.parametrize("form", ["exact", "tanh", "quick"])
def test_default_fp32_poly_bound_on_a_dense_sample(form: str) -> None:
    """Within 8 float32 ulps (and 2^-20 relative) where |GELU| >= 2^-126, absolute 2^-126
    below: a dense tiling of the fitted domain, values near 0, around every breakpoint, and
    far out in both tails."""
    spec = build_exact_poly(form=form, io_dtype="float32", compute_dtype="float32")  # type: ignore[arg-type]
    lo, hi = spec.domain
    rng = np.random.default_rng(1)
    parts = [
        np.linspace(lo, hi, 200_001),
        rng.uniform(lo, hi, 100_000),
        np.geomspace(1e-30, 1.0, 2000),
        -np.geomspace(1e-30, 1.0, 2000),
        np.geomspace(1.0, 3e38, 500),
        -np.geomspace(1.0, 3e38, 500),
    ]
    for b in spec.breakpoints:
        v = np.float32(b)
        near = [v]
        for _ in range(64):
            near += [np.nextafter(near[-2 if len(near) > 1 else 0], np.float32(np.inf))]
        parts.append(np.array(near, np.float32).astype(np.float64))
        parts.append(np.float32(b) + np.arange(-64, 65) * np.spacing(np.float32(b)))
    x = np.unique(np.concatenate(parts).astype(np.float32))
    y = spec.evaluate(x).astype(np.float64)
    g = np.asarray([ORACLE[form](float(v)) for v in x])
    normal = np.abs(g) >= 2.0**-126
    ulp = np.abs(_ordered(y.astype(np.float32), 32) - _ordered(g.astype(np.float32), 32))
    assert ulp[normal].max() <= 8
    assert (np.abs(y - g)[normal] / np.abs(g[normal])).max() <= 2.0**-20
    assert np.abs(y - g)[~normal].max() <= 2.0**-126


def test_narrow_fit_shows_its_wrong_tails_in_the_report() -> None:
    from gelu_quant.lut.poly import build_poly

    narrow = build_poly(-0.6, 0.6, 8, 3, io_dtype="float32", compute_dtype="float32")
    rep = error_report(narrow)
    assert rep.whole_line and rep.fp32 is not None
    assert rep.max_abs > 0.1  # GELU(-0.75) = -0.17 became the tail's 0
    good = error_report(build_exact_poly(io_dtype="float32", compute_dtype="float32"))
    assert good.fp32 is not None and good.fp32.max_ulp <= 8


# -- a narrow-range model, calibrated on its own data -------------------------------------------
def _narrow_model() -> onnx.ModelProto:
    """``y = 3·Gelu(0.2·x)``: with |x| <= 3 the GELU's inputs stay within ±0.6."""
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "a"], ["p"], name="scale_in"),
            helper.make_node("Gelu", ["p"], ["g"], name="gelu"),
            helper.make_node("Mul", ["g", "b"], ["y"], name="scale_out"),
        ],
        "narrow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [
            numpy_helper.from_array(np.array(0.2, np.float32), "a"),
            numpy_helper.from_array(np.array(3.0, np.float32), "b"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def _run_model(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


@pytest.mark.parametrize("target", ["fp16-poly", "fp32-poly"])
def test_narrow_range_model_error_is_the_approximations(tmp_path: Path, target: str) -> None:
    rng = np.random.default_rng(0)
    calib = np.clip(rng.normal(0.0, 1.0, (64, 64)), -3, 3).astype(np.float32)
    held = np.clip(rng.normal(0.0, 1.2, (64, 64)), -3.5, 3.5).astype(np.float32)
    held[0, :4] = [3.5, -3.5, float(calib.max()), float(calib.min())]  # beyond the range, its ends
    onnx.save(_narrow_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=calib)
    r = CliRunner().invoke(
        main,
        ["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "c.npz"), "-o",
         str(tmp_path / "r.json"), "--method", "minmax", "--threads", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lo, hi = json.loads((tmp_path / "r.json").read_text())["sites"][0]["ranges"]["minmax"]["input"]
    assert -0.61 < lo < -0.4 and 0.4 < hi < 0.61
    out = tmp_path / "c.onnx"
    r = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "m.onnx"), "--ranges", str(tmp_path / "r.json"),
         "--target", target, "-o", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "cost" in r.output
    p = (held * np.float32(0.2)).astype(np.float32)  # the GELU's input, as the model computes it
    got = _run_model(out, held).astype(np.float64)
    if target == "fp32-poly":
        want = 3.0 * oracle(p, "exact")
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
        assert rel.max() < 4e-7  # 8 ulps of the polynomial plus the float32 Mul after it
    else:
        g16 = oracle(p.astype(np.float16).astype(np.float64), "exact")
        # within one float16 ulp of the correctly rounded GELU (1.5 ulps of GELU itself; the
        # absolute target 2^-14 below the normal range), then times 3 in float32
        ulp = np.spacing(np.maximum(np.abs(g16), 2.0**-14).astype(np.float16)).astype(np.float64)
        tol = 3.0 * (1.5 * ulp + np.abs(g16) * 2.0**-23)
        assert np.all(np.abs(got - 3.0 * g16) <= tol)


# -- QuickGELU sites ---------------------------------------------------------------------------
def _fixture(name: str) -> onnx.ModelProto:
    return onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text())


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0])


@pytest.mark.parametrize("name", ["ms_quickgelu", "quick_pattern"])
@pytest.mark.parametrize(
    ("target", "rtol", "atol"),
    [
        ("int8-lut", 0.0, 0.06),  # half an output step of a [-6, 6] table
        ("fp16-poly", 2.0**-9, 2.0**-13),  # float16 input and output rounding
        ("fp32-poly", 1e-6, 1e-7),
        ("fp16-quick-gelu", 2.0**-8, 2.0**-12),
    ],
)
def test_quick_sites_become_quickgelu_approximations(
    name: str, target: str, rtol: float, atol: float
) -> None:
    model = _fixture(name)
    res = convert_model(model, ConvertConfig(target, range=(-6.0, 6.0)))
    rec = res.manifest.converted[0]
    assert rec.form == "quick" and spec_from_json(rec.spec or {}).form == "quick"
    assert rec.error is not None and rec.error["form"] == "quick"
    x = np.random.default_rng(3).uniform(-6, 6, (64, 16)).astype(np.float32)
    got = _ort(res.model, x).astype(np.float64)
    quick, exact = oracle(x, "quick"), oracle(x, "exact")
    assert np.all(np.abs(got - quick) <= rtol * np.abs(quick) + atol)
    if target.endswith("poly"):  # where QuickGELU and GELU differ, it is QuickGELU's
        apart = np.abs(quick - exact) > 0.01
        assert apart.sum() > 50
        assert np.all(4 * np.abs(got - quick)[apart] < np.abs(got - exact)[apart])
    else:  # tables: built from QuickGELU (the float64 oracle of every entry)
        spec = spec_from_json(rec.spec or {})
        if hasattr(spec, "in_qparams") and rec.mode == "float":
            qp, oq = spec.in_qparams, spec.out_qparams  # type: ignore[attr-defined]
            xc = (qp.codes().astype(np.float64) - qp.zero_point) * float(np.float32(qp.scale))
            want = np.rint(oracle(xc, "quick") / float(np.float32(oq.scale))) + oq.zero_point
            np.testing.assert_array_equal(spec.table, np.clip(want, oq.qmin, oq.qmax))  # type: ignore[attr-defined]
    if target.endswith("poly"):
        assert rec.cost == (rec.spec or {})["segments"] * (rec.spec or {})["degree"]


def test_quick_alpha_other_than_1702_is_refused() -> None:
    g = helper.make_graph(
        [helper.make_node("QuickGelu", ["x"], ["y"], domain="com.microsoft", alpha=1.0)],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    sites = find_gelu_sites(m)
    assert len(sites) == 1 and sites[0].form == "quick"
    with pytest.raises(ModelError, match="alpha 1"):
        convert_model(m, ConvertConfig("int8-lut", range=(-4.0, 4.0)), sites=sites)


def test_form_override_never_swaps_functions() -> None:
    res = convert_model(
        _fixture("onnx_gelu"), ConvertConfig("int8-lut", range=(-4.0, 4.0), form="tanh")
    )
    assert res.manifest.converted[0].form == "tanh"
    with pytest.raises(ModelError, match="different function"):
        convert_model(
            _fixture("onnx_gelu"), ConvertConfig("int8-lut", range=(-4.0, 4.0), form="quick")
        )


# -- QDQ model with --ranges ---------------------------------------------------------------------
def test_qdq_model_ranges_are_not_used_and_it_says_so(tmp_path: Path) -> None:
    model = _fixture("qdq_gelu")
    res = convert_model(model, ConvertConfig("int8-lut", range=(-1.0, 1.0)))
    assert res.manifest.converted[0].mode == "qdq"
    assert any("not used" in n and "--range" in n for n in res.manifest.notes)
    assert res.manifest.to_json()["notes"] == list(res.manifest.notes)
    onnx.save(model, tmp_path / "q.onnx")
    r = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "q.onnx"), "--range", "-1", "1", "--target", "int8-lut",
         "-o", str(tmp_path / "o.onnx"), "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: --range not used" in r.stderr
    assert "not used" in json.loads(r.stdout)["notes"][0]
    # a float model gets no such note
    res = convert_model(_fixture("onnx_gelu"), ConvertConfig("int8-lut", range=(-1.0, 1.0)))
    assert res.manifest.notes == ()


def test_quick_interpolated_table_and_its_conversion() -> None:
    from gelu_quant.lut.interp import build_interp_lut

    spec = build_interp_lut(segments=32, in_range=(-12.0, 5.0), form="quick")
    qp, oq = spec.in_qparams, spec.out_qparams
    # output qparams from QuickGELU's own minimum (-0.16361), not GELU's (-0.16997)
    assert oq.real_range[0] == pytest.approx(-0.16361, abs=oq.scale)
    knot_codes = qp.qmin + 8 * np.arange(33)
    xk = (knot_codes - qp.zero_point) * float(np.float32(qp.scale))
    want = np.rint(oracle(xk, "quick") / float(np.float32(oq.scale))) + oq.zero_point
    np.testing.assert_array_equal(spec.knots, np.clip(want, oq.qmin, oq.qmax))  # saturating Q
    res = convert_model(_fixture("ms_quickgelu"), ConvertConfig("int8-interp32", range=(-12, 5)))
    rec = res.manifest.converted[0]
    assert rec.form == "quick"
    x = np.random.default_rng(5).uniform(-12, 5, (32, 16)).astype(np.float32)
    np.testing.assert_array_equal(_ort(res.model, x), spec_from_json(rec.spec or {}).evaluate(x))


def test_calibrated_range_focuses_a_small_shape_but_never_ends_correctness() -> None:
    x = np.linspace(-0.6, 0.6, 20001).astype(np.float32)
    g = oracle(x.astype(np.float64), "exact")

    def inside_error(spec) -> float:
        err = np.abs(spec.evaluate(x).astype(np.float64) - g)
        return float((err / np.maximum(np.abs(g), 2.0**-126)).max())

    plain = build_exact_poly(io_dtype="float32", compute_dtype="float32", segments=6, degree=3)
    focused = build_exact_poly(
        io_dtype="float32", compute_dtype="float32", segments=6, degree=3, focus=(-0.6, 0.6)
    )
    assert focused.domain == plain.domain == exact_tail_domain("exact", "float32")
    assert inside_error(focused) < inside_error(plain) / 2
    lo, hi = focused.domain
    far = np.array([lo - 1, lo - 0.01, hi + 0.01, hi + 100], np.float32)
    np.testing.assert_array_equal(focused.evaluate(far), [0.0, 0.0, far[2], far[3]])
    # the default shapes ignore the focus: one verified spec
    assert build_exact_poly(form="quick", focus=(-0.6, 0.6)) is build_exact_poly(form="quick")
