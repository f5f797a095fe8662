"""Running one op on given inputs, in ONNX Runtime and ``onnx.reference``: the build-time proofs
of formula bodies and the tests use these (body building does not).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from gelu_quant.graph.ops.custom_op import DOMAIN, CustomOp


def single_op_model(op: CustomOp, *, shape: Sequence[int | None] = (None,)) -> onnx.ModelProto:
    """A model with one input ``x``, one custom node and its function (for tests and checks)."""
    g = helper.make_graph(
        [op.node("x", "y", "op")],
        "gelu_quant_op",
        [helper.make_tensor_value_info("x", op.input_type, list(shape))],
        [helper.make_tensor_value_info("y", op.output_type, list(shape))],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", op.opset), helper.make_opsetid(DOMAIN, 1)],
        functions=[op.function()],
    )
    m.ir_version = 10
    return m


def run_ort(model: onnx.ModelProto, x: npt.NDArray[Any], threads: int = 1) -> npt.NDArray[Any]:
    """Run a one-input model in ONNX Runtime (CPU, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.asarray(sess.run(None, {name: x})[0])


@functools.lru_cache(maxsize=1)
def reference_ops() -> tuple[type[Any], ...]:
    """Replacements for ``onnx.reference`` ops that cannot run gelu-quant bodies.

    onnx 1.23's ``GatherElements`` gathers with ``numpy.choose``, which takes at most 64
    choices, so it fails on a 256-entry table (upstream replaced it by ``take_along_axis``
    in onnx PR #8444). This is the same operator, per the ONNX spec, with negative indices.
    :func:`reference_evaluator` applies them inside model-local functions too.
    """
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        op_domain = ""

        def _run(self, data: Any, indices: Any, axis: Any = None) -> tuple[Any]:
            a = 0 if axis is None else int(axis)
            a = a + data.ndim if a < 0 else a
            idx = np.where(indices < 0, indices + data.shape[a], indices).astype(np.int64)
            return (np.take_along_axis(data, idx, axis=a),)

    return (GatherElements,)


def reference_evaluator(model: onnx.ModelProto) -> Any:
    """An ``onnx.reference.ReferenceEvaluator`` with :func:`reference_ops`, also inside the
    model-local functions (the stock evaluator builds those without ``new_ops``)."""
    from onnx.reference import ReferenceEvaluator

    class _Evaluator(ReferenceEvaluator):
        def __init__(self, proto: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("new_ops", list(reference_ops()))
            super().__init__(proto, *args, **kwargs)

    return _Evaluator(model)


def run_reference(model: onnx.ModelProto, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Run a one-input model with ``onnx.reference`` (see :func:`reference_evaluator`)."""
    ref = reference_evaluator(model)
    outs: Any = ref.run(None, {model.graph.input[0].name: x})
    return np.asarray(outs[0])


def _reference_opset(opset: int) -> int:
    # onnx.reference (1.23) implements DequantizeLinear/QuantizeLinear from opset 19 only; the
    # int8/uint8 per-tensor semantics are the same since opset 13.
    return max(opset, 21)


def position_probe(
    codes: npt.NDArray[Any], want: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Every code at every position modulo 16 and in a ragged tail (vectorised kernels may
    treat a block's last elements differently), with the expected outputs."""
    shifts = range(17) if codes.size <= 4096 else range(2)
    x = np.concatenate([np.roll(codes, k) for k in shifts] + [codes[:13]])
    y = np.concatenate([np.roll(want, k) for k in shifts] + [want[:13]])
    return x, y


def verify_on_all_codes(op: CustomOp, codes: npt.NDArray[Any], want: npt.NDArray[Any]) -> str:
    """Run ``op`` on ``codes`` in ORT (each code at every position modulo 16, see
    :func:`position_probe`) and onnx.reference; '' when both give ``want`` exactly."""
    m = single_op_model(op)
    codes, want = position_probe(codes, want)
    problems = []
    got = run_ort(m, codes)
    if got.dtype != want.dtype or not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        problems.append(f"ORT differs on {int(np.sum(got != want))} codes")
    ref_op = dataclasses.replace(op, opset=_reference_opset(op.opset))
    got = run_reference(single_op_model(ref_op), codes)
    if got.dtype != want.dtype or not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        problems.append(f"onnx.reference differs on {int(np.sum(got != want))} codes")
    return "; ".join(problems)
