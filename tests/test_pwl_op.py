"""The GeluPwlLut op: its int32 body (and the table bodies) agree with the integer arithmetic,
written out in Python integers in the test, on every input code in ONNX Runtime and
onnx.reference; conversion with the int8-pwlN targets runs and computes the spec."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from _pwl_oracle import pwl_codes
from onnx import helper

import gelu_quant.graph.ops.pwl_lut_op as pwl_op
from gelu_quant.errors import SpecError
from gelu_quant.graph.convert import ConvertConfig, convert_model
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.graph.ops import DOMAIN, custom_op, op_kind
from gelu_quant.graph.ops.lut_op import gather_elements_body
from gelu_quant.graph.ops.op_runners import position_probe, run_ort, run_reference, single_op_model
from gelu_quant.graph.targets import TARGETS
from gelu_quant.lut.pwl import PwlLutSpec, build_pwl_lut
from gelu_quant.lut.spec import spec_from_json

SPELLINGS = Path(__file__).parent / "fixtures" / "spellings"
INTEGER_OPS = {
    "Shape", "Constant", "Reshape", "Cast", "GreaterOrEqual", "Add", "Expand", "GatherElements",
    "Mul", "Sub", "Mod", "Div", "Clip",
}  # fmt: skip


def three_way(spec: PwlLutSpec, opset: int, lut_body: str = "auto") -> str:
    op = custom_op(spec, opset=opset, lut_body=lut_body)  # type: ignore[arg-type]
    assert op_kind(op.op_type) == "GeluPwlLut"
    m = single_op_model(op)
    onnx.checker.check_model(m, full_check=True)
    codes = spec.in_qparams.codes()
    want = np.array(pwl_codes(spec.payload(), codes.astype(int).tolist()), spec.full_table().dtype)
    x, y = position_probe(codes, want)
    assert np.array_equal(run_ort(m, x), y), "ORT differs from the integer arithmetic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = run_reference(single_op_model(dataclasses.replace(op, opset=max(opset, 21))), x)
    assert np.array_equal(ref, y), "onnx.reference differs from the integer arithmetic"
    return op.body_kind


CASES = [
    (8, (-9.0, 4.5), "int8", "int8", "exact", 13),
    (16, (-17.0, 25.0), "int8", "int8", "tanh", 17),
    (16, (-4.0, 8.0), "uint8", "uint8", "quick", 21),
    (32, (-6.0, 6.0), "int8", "int16", "exact", 17),
    (64, (-4.3, 9.8), "int8", "int8", "quick", 13),
    (64, (-3.0, 3.0), "uint8", "int16", "tanh", 21),
    (32, (-10.0, 12.0), "int16", "int8", "exact", 21),
]


@pytest.mark.parametrize(("segments", "rng", "in_dt", "out_dt", "form", "opset"), CASES)
def test_int32_body_on_every_code(
    segments: int, rng: tuple[float, float], in_dt: str, out_dt: str, form: str, opset: int
) -> None:
    spec = build_pwl_lut(
        segments=segments, in_range=rng, in_dtype=in_dt, out_dtype=out_dt, form=form
    )  # type: ignore[arg-type]
    assert three_way(spec, opset) == "int32"
    op = custom_op(spec, opset=opset)
    assert {n.op_type for n in op.body} <= INTEGER_OPS
    for n in op.body:  # no float constants: the arithmetic is integer throughout
        if n.op_type == "Constant":
            assert n.attribute[0].t.data_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    attrs = {a.name: a for a in op.attributes}
    assert helper.get_attribute_value(attrs["segments"]) == segments
    assert helper.get_attribute_value(attrs["shift"]) == spec.shift


@pytest.mark.parametrize("body", ["gather-elements", "gather"])
def test_table_bodies(body: str) -> None:
    spec = build_pwl_lut(segments=16, in_range=(-9.0, 4.5), form="tanh")
    assert three_way(spec, 21, body) == body


def test_hand_written_spec_with_clipping_and_negative_accumulators() -> None:
    """Lines that leave the output range (Clip), negative accumulators (floor, not truncation),
    one segment (no index search), shift 0."""
    from gelu_quant.qparams import QParams

    qi, qo = QParams(0.1, 0, "int8"), QParams(0.1, 0, "int8")
    i32 = np.int32
    for starts, bases, slopes, shift in [
        ([-128, -3, 50], [-(2**20), -5 * 2**8 + 7, 2**14], [3 * 2**12, -(2**9) - 3, 2**13], 10),
        ([-128], [-200 * 2**16], [3 * 2**16 + 1], 16),
        ([-128, 0], [0, -1], [2, -2], 0),
    ]:
        spec = PwlLutSpec(
            qi,
            qo,
            "exact",
            np.array(starts, i32),
            np.array(bases, i32),
            np.array(slopes, i32),
            shift,
        )
        raw = [
            (bases[k] + (q - starts[k]) * slopes[k]) >> shift
            for q in range(-128, 128)
            for k in [max(i for i, st in enumerate(starts) if st <= q)]
        ]
        assert min(raw) < -128 or max(raw) > 127  # the Clip matters
        three_way(spec, 17)


def test_a_body_that_differs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = build_pwl_lut(segments=16, in_range=(-9.0, 4.5))
    wrong = spec.full_table().copy()
    wrong[200] += 1

    def bad_body(s: PwlLutSpec) -> list[onnx.NodeProto]:
        return gather_elements_body(wrong, s.in_qparams.qmin)

    monkeypatch.setattr(pwl_op, "int32_body", bad_body)
    with pytest.raises(SpecError, match="differs from its spec: ORT differs on 17 codes"):
        custom_op(spec, opset=21)
    assert custom_op(spec, opset=21, verify=False).body_kind == "int32"


def _load(name: str) -> onnx.ModelProto:
    return onnx.parser.parse_model((SPELLINGS / f"{name}.onnxtxt").read_text())


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> list:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *m.graph.input]}
    for n in names:
        if n not in {o.name for o in m.graph.output}:
            m.graph.output.append(helper.make_tensor_value_info(n, types[n], None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return list(s.run(names, feeds))


@pytest.mark.parametrize("target", ["int8-pwl8", "int8-pwl16", "int8-pwl32", "int8-pwl64"])
def test_convert_float_site(target: str) -> None:
    assert TARGETS[target].segments == int(target[len("int8-pwl") :])
    model = _load("onnx_gelu")
    site = find_gelu_sites(model)[0]
    res = convert_model(model, ConvertConfig(target, range=(-6.0, 6.0)), sites=[site])
    rec = res.manifest.converted[0]
    assert op_kind(rec.op_type or "") == "GeluPwlLut" and rec.body == "int32"
    spec = spec_from_json(json.loads(json.dumps(rec.spec)))
    assert isinstance(spec, PwlLutSpec) and spec.segments == int(target[len("int8-pwl") :])
    assert rec.error is not None and rec.error["max_steps_vs_table"] <= 1
    inp = model.graph.input[0]
    shape = [d.dim_value or 7 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(3).normal(0, 3, shape).astype(np.float32)
    feeds = {inp.name: x}
    (gx,) = _run(model, feeds, [site.input])
    (got,) = _run(res.model, feeds, [site.output])
    np.testing.assert_array_equal(got, spec.evaluate(gx))
    assert any(n.domain == DOMAIN for n in res.model.graph.node)


def test_convert_qdq_site_collapses_into_one_op() -> None:
    model = _load("qdq_gelu")
    site = find_gelu_sites(model)[0]
    assert site.qdq_in is not None and site.qdq_out is not None
    res = convert_model(model, ConvertConfig("int8-pwl16"), sites=[site])
    rec = res.manifest.converted[0]
    assert rec.mode == "qdq"
    spec = spec_from_json(rec.spec or {})
    assert isinstance(spec, PwlLutSpec)
    assert spec.in_qparams.scale == pytest.approx(site.qdq_in.scale)
    inp = model.graph.input[0]
    shape = [d.dim_value or 7 for d in inp.type.tensor_type.shape.dim]
    feeds = {inp.name: np.random.default_rng(4).normal(0, 3, shape).astype(np.float32)}
    (codes,) = _run(model, feeds, [site.qdq_in.tensor])
    (got,) = _run(res.model, feeds, [site.qdq_out.tensor])
    want = pwl_codes(spec.payload(), codes.astype(int).ravel().tolist())
    np.testing.assert_array_equal(got.ravel().astype(int), want)
