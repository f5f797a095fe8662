"""The gelu_quant custom ops: every body agrees bit for bit with its spec's numpy reference, in
ONNX Runtime and in onnx.reference (three-way), over every input code (every float16 input for
polynomials)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _formulas import assert_sequence_up_to_transcendental, op_sequence
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.graph.convert import expand_functions
from gelu_quant.graph.ops import DOMAIN, custom_op, op_kind
from gelu_quant.graph.ops.formula_proof import GELU_ERROR_MARGIN
from gelu_quant.graph.ops.op_runners import position_probe, run_ort, run_reference, single_op_model
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.poly import build_poly
from gelu_quant.lut.table import build_lut
from gelu_quant.numerics import gelu
from gelu_quant.qparams import QParams


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical arrays; NaNs only need to be NaN in both (payloads are not semantics)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            return False
        a, b = a[~nan_a], b[~nan_b]
    return bool(
        np.array_equal(
            np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
        )
    )


def three_way(op, x: np.ndarray, want: np.ndarray) -> None:
    """ORT and onnx.reference both reproduce ``want`` bit for bit on ``x``."""
    m = single_op_model(op)
    onnx.checker.check_model(m, full_check=True)
    got_ort = run_ort(m, x)
    assert same_bits(got_ort, want), "ORT differs from the spec"
    ref_m = m if op.opset >= 19 else single_op_model(dataclasses.replace(op, opset=21))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got_ref = run_reference(ref_m, x)
    assert same_bits(got_ref, want), "onnx.reference differs from the spec"


def _table_oracle(spec) -> np.ndarray:
    """The table recomputed independently: Q_out(gelu64(DQ_in(q))) with explicit formulas."""
    qp = spec.in_qparams
    codes = np.arange(qp.qmin, qp.qmax + 1)
    x = (codes - qp.zero_point) * np.float64(np.float32(qp.scale))
    y = gelu(x, spec.form)
    if spec.out_qparams is None:
        return y.astype(spec.table.dtype)
    oq = spec.out_qparams
    q = np.rint(y / np.float64(np.float32(oq.scale))) + oq.zero_point
    return np.clip(q, oq.qmin, oq.qmax).astype(spec.table.dtype)


LUT_CASES = [
    ((-17.0, 25.0), "int8", "int8", "exact"),
    ((-9.3, 4.1), "int8", "int8", "exact"),
    ((-1.0, 1.0), "int8", "int8", "exact"),  # needs nudged scales
    ((-8.0, 4.0), "uint8", "uint8", "exact"),
    ((-5.0, 5.0), "int8", "int8", "tanh"),
    ((-10.0, 3.0), "uint8", "uint8", "tanh"),
    ((-6.0, 6.0), "int8", "float16", "exact"),
    ((-6.0, 6.0), "int8", "float32", "exact"),
    ((-6.0, 6.0), "int8", "int16", "exact"),
    ((-12.0, 5.0), "int8", "int8", "quick"),
    ((-0.6, 0.6), "int8", "int8", "quick"),  # needs nudged scales
    ((-3.0, 9.0), "uint8", "uint8", "quick"),
    ((-6.0, 6.0), "int8", "float32", "quick"),
]


@pytest.mark.parametrize(("rng", "in_dtype", "out_dtype", "form"), LUT_CASES)
@pytest.mark.parametrize("body", ["auto", "gather"])
def test_gelu_lut_three_way_on_every_code(rng, in_dtype, out_dtype, form, body) -> None:
    spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)
    np.testing.assert_array_equal(spec.table, _table_oracle(spec))
    op = custom_op(spec, opset=21, lut_body=body)
    assert op_kind(op.op_type) == "GeluLut"
    if body == "gather":
        assert op.body_kind == "gather"
    codes = spec.in_qparams.codes()
    three_way(op, *position_probe(codes, spec.lookup(codes)))


@pytest.mark.parametrize(("rng", "in_dtype", "out_dtype", "form"), LUT_CASES[::2])
def test_gather_elements_body_three_way(rng, in_dtype, out_dtype, form) -> None:
    """The general body agrees with the spec in ORT and onnx.reference (with reference_ops)."""
    spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)
    op = custom_op(spec, opset=21, lut_body="gather-elements")
    assert op.body_kind == "gather-elements"
    codes = spec.in_qparams.codes()
    three_way(op, *position_probe(codes, spec.lookup(codes)))


def test_reference_ops_fix_onnx_gather_elements() -> None:
    """onnx 1.23's own GatherElements fails on 256 entries; the replacement follows the spec."""
    from onnx.reference import ReferenceEvaluator

    spec = build_lut(in_range=(-8, 8), out_dtype="float16")
    op = custom_op(spec, opset=21, lut_body="gather-elements")
    m = single_op_model(op)
    codes = spec.in_qparams.codes()
    with pytest.raises(ValueError, match=r"\b(32|64)\b"):  # numpy.choose's limit: 32 in numpy 1
        ReferenceEvaluator(m).run(None, {"x": codes})
    got = run_reference(m, codes)
    assert same_bits(got, np.array([spec.table[int(c) + 128] for c in codes], np.float16))


def test_int8_gelu_tables_get_the_fast_formula_body() -> None:
    """The point of the formula body: GELU tables with int8/uint8 outputs never need Gather
    (QuickGELU tables use GatherElements by choice: faster than their formula in ORT)."""
    for rng, in_dtype, out_dtype, form in LUT_CASES:
        if out_dtype in ("int8", "uint8") and form != "quick":
            spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)
            op = custom_op(spec, opset=21)
            assert op.body_kind == "formula", (rng, op.notes)
            assert not any(n.op_type.startswith("Gather") for n in op.body)


@pytest.mark.parametrize(("rng", "in_dtype", "out_dtype", "form"), LUT_CASES[:6])
def test_opset17_formula_body_three_way(rng, in_dtype, out_dtype, form) -> None:
    """Before opset 20 the formula body spells GELU out on Cast -> Mul -> Sub (no Gelu op);
    auto keeps it for the erf form (ORT fuses it) and picks GatherElements for the tanh form
    (measured faster than the spelled-out tanh formula)."""
    spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)
    auto = "gather-elements" if form == "tanh" else "formula"
    assert custom_op(spec, opset=17, verify=False).body_kind == auto
    op = custom_op(spec, opset=17, lut_body="formula")
    assert op.body_kind == "formula"
    assert "Gelu" not in {n.op_type for n in op.body}
    codes = spec.in_qparams.codes()
    three_way(op, codes, spec.lookup(codes))


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize(("rng", "in_dtype", "out_dtype", "form"), LUT_CASES[9:12])
def test_quick_formula_body_three_way(rng, in_dtype, out_dtype, form, opset) -> None:
    """QuickGELU tables' formula body at every opset: DequantizeLinear -> x·Sigmoid(1.702x) ->
    QuantizeLinear, equal to the table on every code (and the table to the float64 oracle);
    auto picks GatherElements for them (measured faster)."""
    spec = build_lut(in_range=rng, in_dtype=in_dtype, out_dtype=out_dtype, form=form)
    np.testing.assert_array_equal(spec.table, _table_oracle(spec))
    assert custom_op(spec, opset=opset, verify=False).body_kind == "gather-elements"  # faster
    op = custom_op(spec, opset=opset, lut_body="formula")
    assert op.body_kind == "formula", op.notes
    assert [n.op_type for n in op.body if n.op_type != "Constant"] == [
        "DequantizeLinear",
        "Mul",
        "Sigmoid",
        "Mul",
        "QuantizeLinear",
    ]
    codes = spec.in_qparams.codes()
    three_way(op, *position_probe(codes, spec.lookup(codes)))


def test_int16_lut_three_way_on_all_65536_codes() -> None:
    spec = build_lut(in_range=(-8.0, 8.0), in_dtype="int16", out_dtype="int16")
    op = custom_op(spec, opset=21)
    codes = spec.in_qparams.codes()
    assert codes.size == 65536
    three_way(op, codes, spec.lookup(codes))


def test_qdq_scales_table_in_opset17() -> None:
    """A table from a QDQ graph's own scales, body written for an opset-17 model."""
    spec = build_lut(
        in_qparams=QParams(0.0625, -20, "int8"), out_qparams=QParams(0.03, -110, "int8")
    )
    op = custom_op(spec, opset=17)
    assert op.opset == 17
    three_way(op, spec.in_qparams.codes(), spec.lookup(spec.in_qparams.codes()))


@settings(max_examples=8, deadline=None)
@given(
    lo=st.floats(-20.0, -0.5),
    hi=st.floats(0.5, 20.0),
    form=st.sampled_from(["exact", "tanh"]),
    dtype=st.sampled_from(["int8", "uint8"]),
)
def test_formula_body_property(lo: float, hi: float, form: str, dtype: str) -> None:
    spec = build_lut(in_range=(lo, hi), in_dtype=dtype, out_dtype=dtype, form=form)
    op = custom_op(spec, opset=21)
    codes = spec.in_qparams.codes()
    got = run_ort(single_op_model(op), codes)
    np.testing.assert_array_equal(got, _table_oracle(spec)[codes.astype(int) - codes.min()])


@pytest.mark.parametrize("segments", [16, 64])
def test_interp_lut_three_way(segments: int) -> None:
    spec = build_interp_lut(segments=segments, in_range=(-9.0, 5.0))
    op = custom_op(spec, opset=21)
    assert op_kind(op.op_type) == "GeluInterpLut"
    codes = spec.in_qparams.codes()
    three_way(op, codes, spec.lookup(codes))


def _all_fp16() -> np.ndarray:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    return bits.view(np.float16)  # every float16: ±0, subnormals, ±inf, NaNs


POLY_CASES = [
    ((-8.0, 8.0), 8, 3, "float16", "float16", "exact"),
    ((-6.0, 6.0), 4, 2, "float16", "float32", "exact"),
    ((-8.0, 8.0), 6, 3, "float32", "float32", "tanh"),
    ((0.5, 3.0), 1, 2, "float16", "float16", "exact"),
    ((-11.6171875, 4.5546875), 16, 4, "float16", "float16", "quick"),
    ((-20.0, 8.0), 12, 5, "float32", "float32", "quick"),
    # beyond 16 segments the body binary-searches the breakpoints
    ((-8.0, 8.0), 32, 4, "float16", "float16", "exact"),
    ((-63.527347564697266, 9.899266242980957), 48, 8, "float32", "float32", "quick"),
]


@pytest.mark.parametrize(("rng", "segments", "degree", "io", "cp", "form"), POLY_CASES)
def test_gelu_poly_three_way_on_every_fp16_input(rng, segments, degree, io, cp, form) -> None:
    spec = build_poly(rng[0], rng[1], segments, degree, io_dtype=io, compute_dtype=cp, form=form)
    op = custom_op(spec, opset=21)
    assert op_kind(op.op_type) == "GeluPoly"
    x = _all_fp16().astype(io)
    with np.errstate(all="ignore"):
        want = spec.evaluate(x)
    three_way(op, x, want)


BASELINE_CASES = [
    ("tanh", "float16", "float16"),
    ("tanh", "float16", "float32"),
    ("tanh", "float32", "float32"),
    ("quick", "float16", "float16"),
    ("quick", "float32", "float32"),
]


@pytest.mark.parametrize(("which", "io", "cp"), BASELINE_CASES)
def test_float_baselines(which: str, io: str, cp: str) -> None:
    """Tanh-formula and QuickGELU bodies on every float16 input, in onnx.reference and ORT:
    exactly the spec's op sequence up to the one transcendental (tanh or exp), which may be
    within 1 float16 ulp (float16 arithmetic: a float32 kernel rounded to float16) or 8 float32
    ulps (float32 arithmetic: ORT's and numpy's float32 kernels are not correctly rounded) of
    the correctly rounded value -- see ``tests/_formulas.py``. Every other op is an IEEE
    operation or a cast and must be reproduced bit for bit (ORT may compute float32
    QuickGELU's ``x * (1/t)`` as ``x / t``: its optimizer fuses the two)."""
    from gelu_quant.lut.baselines import QuickGeluSpec, TanhGeluSpec

    cls = TanhGeluSpec if which == "tanh" else QuickGeluSpec
    spec = cls(-8.0, 8.0, io, cp)  # type: ignore[arg-type]
    op = custom_op(spec, opset=21)
    x = _all_fp16().astype(io)
    with np.errstate(all="ignore"):
        want = spec.evaluate(x)
    # the spec's reference is the sequence with the correctly rounded transcendental
    assert same_bits(want, op_sequence(which, x, io, cp))
    m = single_op_model(op)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got_ref = run_reference(m, x)
    assert_sequence_up_to_transcendental(got_ref, x, which, io, cp, "onnx.reference")
    got_ort = run_ort(m, x)
    assert_sequence_up_to_transcendental(got_ort, x, which, io, cp, "ORT", ort_rewrites=True)


@pytest.mark.parametrize(("in_bits", "io"), [(8, "float32"), (8, "float16"), (16, "float32")])
def test_igelu_three_way(in_bits: int, io: str) -> None:
    """I-BERT's integer GELU: int32 arithmetic, bit-exact three ways on every float16 input
    (onnx.reference's QuantizeLinear does not saturate +-inf, so those two are left out of its
    comparison)."""
    from gelu_quant.lut.baselines import IGeluSpec

    spec = IGeluSpec(-8.0, 8.0, in_bits=in_bits, io_dtype=io)  # type: ignore[arg-type]
    op = custom_op(spec, opset=21)
    x = _all_fp16().astype(io)
    with np.errstate(all="ignore"):
        want = spec.evaluate(x)
    m = single_op_model(op)
    assert same_bits(run_ort(m, x), want)
    finite = ~np.isinf(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert same_bits(run_reference(m, x[finite]), want[finite])
    if in_bits == 16:
        with pytest.raises(ModelError, match="opset 21"):
            custom_op(spec, opset=17)
    else:  # 8-bit Q works from opset 13
        assert same_bits(run_ort(single_op_model(custom_op(spec, opset=13)), x), want)


@pytest.mark.parametrize("segments", [6, 40])
def test_fp16_poly_float32_inputs_dense(segments: int) -> None:
    spec = build_poly(-8.0, 8.0, segments, 3, io_dtype="float32", compute_dtype="float32")
    x = np.random.default_rng(0).normal(0, 5, 200_000).astype(np.float32)
    edges = np.array(spec.breakpoints, np.float32)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    specials = np.array([np.inf, -np.inf, np.nan, -8.0, 8.0, 0.0, -0.0], np.float32)
    x = np.concatenate([x, near.astype(np.float32), specials])
    three_way(custom_op(spec, opset=21), x, spec.evaluate(x))


def test_float32_gelu_error_is_far_below_the_assumed_margin() -> None:
    """The formula body's proof assumes |gelu32 - gelu64| <= 32·2⁻²⁴·(|x|+1); measure the
    float32 GELU of ORT's Gelu kernel, ORT's fused erf formula and onnx.reference on a dense
    grid against float64 and require a 4x safety factor on top."""
    x = np.linspace(-30, 30, 120_001).astype(np.float32)
    den = (np.abs(x.astype(np.float64)) + 1.0) * 2.0**-24
    for form, approx in (("exact", "none"), ("tanh", "tanh"), ("quick", "")):
        ref = gelu(x.astype(np.float64), form)
        if form == "quick":  # no Gelu op: the body's own x·Sigmoid(1.702x) is checked below
            approx = "none"
            ref_gelu = gelu(x.astype(np.float64), "exact")
        else:
            ref_gelu = ref
        g = helper.make_graph(
            [helper.make_node("Gelu", ["x"], ["y"], approximate=approx)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        m.ir_version = 10
        assert np.max(np.abs(run_ort(m, x) - ref_gelu) / den) <= GELU_ERROR_MARGIN / 4
        # the formula the body uses, in ORT (fused) and in onnx.reference
        spec = build_lut(in_range=(-30.0, 30.0), out_dtype="float32", form=form)
        op = custom_op(spec, opset=21, lut_body="gather")
        from gelu_quant.graph.ops.formula_proof import gelu_formula_nodes

        g2 = helper.make_graph(
            gelu_formula_nodes("x", "y", form),
            "g2",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        )
        m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", op.opset)])
        m2.ir_version = 10
        assert np.max(np.abs(run_ort(m2, x) - ref) / den) <= GELU_ERROR_MARGIN / 4
        assert np.max(np.abs(run_reference(m2, x) - ref) / den) <= GELU_ERROR_MARGIN / 4


def test_function_names_are_content_hashes() -> None:
    a = build_lut(in_range=(-8.0, 4.0))
    b = build_lut(in_range=(-8.0, 4.5))
    op_a, op_a2, op_b = custom_op(a), custom_op(build_lut(in_range=(-8.0, 4.0))), custom_op(b)
    assert op_a.op_type == op_a2.op_type
    assert op_a.op_type != op_b.op_type
    assert op_a.function().SerializeToString() == op_a2.function().SerializeToString()
    fn = op_a.function()
    assert fn.domain == DOMAIN and fn.name == op_a.op_type
    assert {"table", "in_scale", "in_zero_point", "out_scale", "out_zero_point", "form"} <= set(
        fn.attribute
    )
    node = op_a.node("x", "y", "n")
    table = next(at for at in node.attribute if at.name == "table")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(table.t), a.table)


def test_expand_inlines_the_body() -> None:
    spec = build_lut(in_range=(-8.0, 4.0))
    m = single_op_model(custom_op(spec))
    e = expand_functions(m)
    assert not e.functions
    assert all(n.domain != DOMAIN for n in e.graph.node)
    assert all(o.domain != DOMAIN for o in e.opset_import)
    onnx.checker.check_model(e, full_check=True)
    codes = spec.in_qparams.codes()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(e.SerializeToString(), so, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": codes})[0], spec.table)


def test_refusals() -> None:
    spec = build_lut(in_range=(-8.0, 4.0))
    with pytest.raises(ModelError, match="opset"):
        custom_op(spec, opset=11)
    with pytest.raises(SpecError, match="LUT body"):
        custom_op(spec, lut_body="magic")  # type: ignore[arg-type]
    fp32_out = build_lut(in_range=(-8.0, 4.0), out_dtype="float32")
    with pytest.raises(SpecError, match="formula"):
        custom_op(fp32_out, lut_body="formula")


def test_exact_gelu_constants() -> None:
    from gelu_quant.graph.ops.formula_proof import gelu_formula_nodes

    nodes = gelu_formula_nodes("x", "y", "exact")
    sqrt2 = next(n for n in nodes if n.output[0] == "sqrt2")
    v = float(onnx.numpy_helper.to_array(sqrt2.attribute[0].t))
    assert v == float(np.float32(math.sqrt(2.0)))
