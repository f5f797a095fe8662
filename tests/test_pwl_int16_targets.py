"""The ``int16-pwl8|16|32|64`` targets: int16 codes in and out, like ``int16-lut``. Oracles: the
PWL integer arithmetic written out in Python integers (``_pwl_oracle.pwl_codes``) on all 65536
int16 codes, the op's body run on all of them in ONNX Runtime, and the converted model run in
ONNX Runtime against the spec's float path (QuantizeLinear -> codes -> DequantizeLinear)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _pwl_oracle import pwl_codes
from click.testing import CliRunner
from onnx import TensorProto, helper

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.cli.main import main
from gelu_quant.errors import ModelError
from gelu_quant.graph.convert import ConvertConfig, convert_model
from gelu_quant.graph.ops import custom_op, op_kind
from gelu_quant.graph.ops.op_runners import run_ort, single_op_model
from gelu_quant.graph.targets import TARGETS
from gelu_quant.lut.pwl import PwlLutSpec
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.numerics import gelu

C = 16


def _model(path: Path, opset: int = 21) -> Path:
    g = helper.make_graph(
        [
            helper.make_node("Gelu", ["x"], ["g"]),
            helper.make_node("Add", ["g", "x"], ["y"]),  # something after the site
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


def _data(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, C)) * 2.5).astype(np.float32)


def test_targets_are_declared_like_the_int8_ones() -> None:
    for n in (8, 16, 32, 64):
        t, t8 = TARGETS[f"int16-pwl{n}"], TARGETS[f"int8-pwl{n}"]
        assert (t.kind, t.segments, t.breakpoints) == (t8.kind, n, "optimized")
        assert (t.in_dtype, t.out_dtype) == ("int16", "int16")
        assert (TARGETS["int16-lut"].in_dtype, TARGETS["int16-lut"].out_dtype) == (
            t.in_dtype,
            t.out_dtype,
        )


@pytest.mark.parametrize("segments", [8, 16, 32, 64])
def test_convert_with_a_ranges_file(tmp_path: Path, segments: int) -> None:
    model = _model(tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=_data(256, 0))
    calibrate_model(model, tmp_path / "cal.npz", tmp_path / "r.json")
    out = tmp_path / "o.onnx"
    args = ["convert", str(model), "--ranges", str(tmp_path / "r.json"), "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--target", f"int16-pwl{segments}"])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "o.manifest.json").read_text())
    (rec,) = [s for s in man["sites"] if s["status"] == "converted"]
    assert op_kind(rec["op_type"]) == "GeluPwlLut" and rec["body"] == "int32"
    spec = spec_from_json(rec["spec"])
    assert isinstance(spec, PwlLutSpec) and spec.segments == segments
    assert (spec.in_qparams.dtype, spec.out_qparams.dtype) == ("int16", "int16")
    codes = spec.in_qparams.codes()
    assert codes.size == 65536
    # the spec's codes are its stated integer arithmetic, on every int16 code
    want = np.array(pwl_codes(spec.payload(), codes.astype(int).tolist()), np.int16)
    assert np.array_equal(spec.lookup(codes), want)
    # the op's body (as the model holds it) gives them in ORT
    op = custom_op(spec, opset=21, verify=False)
    assert op.body_kind == "int32"
    assert np.array_equal(run_ort(single_op_model(op), codes), want)
    # the converted model in ORT: the spec's float path, then the Add
    x = _data(300, 1)  # held out from calibration
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    assert np.array_equal(got, spec.evaluate(x).astype(np.float32) + x)
    # int16 codes: finer than int8 -- within the PWL error the manifest states, of float64 GELU
    inside = (x >= spec.domain[0]) & (x <= spec.domain[1])
    err = np.abs(spec.evaluate(x).astype(np.float64) - gelu(x.astype(np.float64)))[inside]
    step_in = spec.in_qparams.scale
    assert err.max() <= rec["error"]["max_abs"] + step_in  # + the input rounding
    # measured 9.7e-3, 2.9e-3, 8.8e-4, 8.7e-4
    assert rec["error"]["max_abs"] < {8: 2e-2, 16: 6e-3, 32: 2e-3, 64: 2e-3}[segments]


def test_below_opset_21_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path / "m.onnx", opset=20)))
    with pytest.raises(ModelError, match="opset 21"):
        convert_model(model, ConvertConfig("int16-pwl16", range=(-6.0, 6.0)))
