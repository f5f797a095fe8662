"""QuantizeLinear / DequantizeLinear semantics against a Python oracle and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.qparams import QParams

LIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def oracle_quantize(x: float, scale: float, zp: int, dtype: str) -> int:
    lo, hi = LIMITS[dtype]
    return max(lo, min(hi, round(x / scale) + zp))  # Python's round() is half to even


@pytest.mark.parametrize(
    ("x", "want"),
    [(0.25, 0), (0.75, 2), (1.25, 2), (-0.25, 0), (-0.75, -2), (-1.25, -2), (2.5 * 0.5, 2)],
)
def test_ties_round_half_to_even(x: float, want: int) -> None:
    qp = QParams(scale=0.5, zero_point=0, dtype="int8")
    assert int(qp.quantize(np.array([x]))[0]) == want


def test_saturation_and_zero_point() -> None:
    qp = QParams(scale=0.1, zero_point=-10, dtype="int8")
    got = qp.quantize(np.array([-1e9, -13.8, 1e9, np.inf, -np.inf]))
    assert got.tolist() == [-128, -128, 127, 127, -128]
    u = QParams(scale=0.1, zero_point=200, dtype="uint8")
    assert u.quantize(np.array([-100.0, 5.45, 100.0])).tolist() == [0, 254, 255]


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_quantize_matches_python_oracle(dtype: str) -> None:
    rng = np.random.default_rng(0)
    qmin, qmax = LIMITS[dtype]
    scale, zp = 0.037, (qmin + qmax + 1) // 2 + 3
    qp = QParams(scale=scale, zero_point=zp, dtype=dtype)  # type: ignore[arg-type]
    x = rng.normal(0, 3, 2000) * (qmax - qmin) * qp.scale / 12
    want = [oracle_quantize(float(v), qp.scale, zp, dtype) for v in x]
    assert qp.quantize(x).tolist() == want


def _ort_q_dq(x: np.ndarray, qp: QParams) -> tuple[np.ndarray, np.ndarray]:
    g = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor_value_info("q", qp.onnx_dtype, [None]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None]),
        ],
        initializer=[
            helper.make_tensor("s", TensorProto.FLOAT, [], [qp.scale]),
            helper.make_tensor("z", qp.onnx_dtype, [], [qp.zero_point]),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    q, y = s.run(None, {"x": x})
    return q, y


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_bit_exact_with_onnxruntime_on_float32(dtype: str) -> None:
    rng = np.random.default_rng(1)
    qp = QParams.from_range(-3.1, 7.7, dtype)  # type: ignore[arg-type]
    codes = rng.integers(qp.qmin, qp.qmax + 1, 4000)
    # exact ties (k + 0.5) * scale in float32, plus random values and out-of-range values
    ties = ((codes - qp.zero_point) + 0.5) * np.float32(qp.scale)
    x = np.concatenate([ties, rng.uniform(-5, 10, 4000)]).astype(np.float32)
    q_ort, y_ort = _ort_q_dq(x, qp)
    assert np.array_equal(qp.quantize(x), q_ort)
    assert np.array_equal(qp.dequantize(q_ort, np.float32), y_ort)


def test_from_range_covers_and_keeps_zero_exact() -> None:
    for lo, hi, dt in [
        (-8, 8, "int8"),
        (-0.17, 8.1, "int8"),
        (0.5, 3.0, "uint8"),
        (-3.0, -1.0, "int16"),
        (-1e-4, 2e-4, "int8"),
    ]:
        qp = QParams.from_range(lo, hi, dt)  # type: ignore[arg-type]
        rlo, rhi = qp.real_range
        assert rlo <= min(lo, 0.0) + qp.scale / 2 + 1e-12
        assert rhi >= max(hi, 0.0) - qp.scale / 2 - 1e-12
        assert float(qp.dequantize(qp.quantize(np.array([0.0])))[0]) == 0.0


@pytest.mark.parametrize("args", [(1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_from_range_rejects_bad_ranges(args: tuple[float, float]) -> None:
    with pytest.raises(SpecError):
        QParams.from_range(*args)


def test_rejects_bad_params() -> None:
    with pytest.raises(SpecError):
        QParams(scale=0.0, zero_point=0, dtype="int8")
    with pytest.raises(SpecError):
        QParams(scale=1.0, zero_point=300, dtype="int8")
    with pytest.raises(SpecError):
        QParams(scale=1.0, zero_point=0, dtype="int4")  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    qp = QParams.from_range(-2.3, 9.1, "uint8")
    assert QParams.from_json(qp.to_json()) == qp


def test_qparams_from_ranges_follow_the_formula_row_by_row() -> None:
    from gelu_quant.qparams import qlimits, qparams_from_ranges

    rng = np.random.default_rng(7)
    lo = np.concatenate([-rng.lognormal(0, 3, 300), rng.uniform(0.1, 5, 50), [0.0, -1e-30]])
    hi = np.concatenate([rng.lognormal(0, 3, 300), rng.uniform(5.1, 9, 50), [1e-30, 0.0]])
    for dtype in ("int8", "uint8", "int16"):
        scales, zps = qparams_from_ranges(lo, hi, dtype)  # type: ignore[arg-type]
        qmin, qmax = qlimits(dtype)
        for i in range(lo.size):
            # the documented formula, one range at a time in Python floats
            a, b = min(float(lo[i]), 0.0), max(float(hi[i]), 0.0)
            scale = float(np.float32((b - a) / (qmax - qmin)))
            zp = min(max(round(qmin - a / scale), qmin), qmax)  # round(): half to even
            assert (scale, zp) == (scales[i], zps[i])
    with pytest.raises(SpecError, match="empty range"):
        qparams_from_ranges(np.array([0.0, 2.0]), np.array([1.0, 1.0]))
    with pytest.raises(SpecError, match="not finite"):
        qparams_from_ranges(np.array([0.0, -np.inf]), np.array([1.0, 1.0]))
