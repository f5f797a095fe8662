"""Low-bit table codes stored as ONNX INT4 / UINT4 (opset 21): the ``GeluLut`` op on 4-bit
tensors and its proof.

A table whose input and output codes have at most 4 bits (``int4-lut``, ``uint4-lut``,
``int3-lut``, ``int2-lut``, …) fits the 4-bit ONNX types: signed codes in INT4, unsigned in
UINT4. Its op then takes and returns such tensors; the spec (and its C header, where codes stay
in 8-bit containers) is the same :class:`~gelu_quant.lut.table.LutSpec` as in the 8-bit
container.

What ONNX Runtime 1.32's CPU provider runs on INT4/UINT4 tensors (probed here, see
``benchmarks/bench_int4_storage.py``): ``QuantizeLinear``, ``DequantizeLinear`` (opset 21),
``Cast`` to and from them (values out of range wrap), ``Transpose``; an ``Identity`` is only
optimised away. It has no INT4 kernel for ``Reshape``, ``Shape`` or ``Identity``, and the ONNX
schemas of ``Clip``, ``Gather`` and ``GatherElements`` do not admit 4-bit tensors at all. So
the bodies are:

* **table** (the default, any width): ``Cast(X, int32)``, then the 8-bit body's
  ``GatherElements`` on the flattened codes (or ``Gather``) over the ``2**bits``-entry table,
  then ``Cast`` to INT4/UINT4 (exact: every entry is a code of the range);
* **formula** (``lut_body="formula"``, codes spanning the whole 4-bit range):
  ``DequantizeLinear(X, s, zp) -> Gelu -> QuantizeLinear(·, s', zp')`` with 4-bit zero points
  (QuantizeLinear saturates to exactly the code range), proved like the 8-bit formula body
  (:func:`~gelu_quant.graph.ops.formula_proof.fit_formula`). ORT runs it slower than the table
  body (its 4-bit QuantizeLinear/DequantizeLinear kernels are scalar), so ``auto`` does not
  choose it.

Every body is run on every code (at every position modulo 16) in ORT and ``onnx.reference`` at
build time and must reproduce the table exactly (:func:`verify_int4_op`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import const
from gelu_quant.graph.ops.custom_op import DOMAIN, CustomOp, LutBody
from gelu_quant.graph.ops.formula_proof import fit_formula
from gelu_quant.graph.ops.lut_op import _lut_attributes, table_body
from gelu_quant.graph.ops.op_runners import position_probe, run_ort, run_reference
from gelu_quant.lut.table import LutSpec
from gelu_quant.qparams import QParams

INT4_OPSET = 21
"""First default-domain opset with INT4/UINT4 tensors (QuantizeLinear/DequantizeLinear 21)."""

CodeContainer = Literal["auto", "int8", "int4"]
CODE_CONTAINERS: tuple[CodeContainer, ...] = ("auto", "int8", "int4")
"""``convert --code-container``: ``auto`` stores codes of at most 4 bits as INT4/UINT4 where the
model's opset allows (>= 21), ``int8`` keeps the 8-bit container, ``int4`` insists on 4-bit
storage (refused below opset 21)."""

FOUR_BIT_TYPES: dict[str, int] = {"int8": TensorProto.INT4, "uint8": TensorProto.UINT4}
"""The 4-bit ONNX type of codes whose 8-bit container is int8 / uint8."""
FOUR_BIT_NAMES: dict[int, str] = {TensorProto.INT4: "int4", TensorProto.UINT4: "uint4"}
_FOUR_BIT_LIMITS = {"int8": (-8, 7), "uint8": (0, 15)}


def four_bit_target(target: Any) -> bool:
    """Does a ``--target`` (:class:`~gelu_quant.graph.targets.Target`) build tables whose codes
    fit INT4/UINT4 (``int4-lut``, ``uint3-lut``, …)?"""
    return (
        target.kind == "lut"
        and target.bits <= 4
        and target.entry_bits <= 4
        and target.in_dtype in FOUR_BIT_TYPES
        and target.out_dtype in FOUR_BIT_TYPES
    )


def type_name(data_type: int) -> str:
    """``int4`` for ``TensorProto.INT4``, ``int8`` for ``TensorProto.INT8``, …"""
    return FOUR_BIT_NAMES.get(data_type) or onnx.helper.tensor_dtype_to_np_dtype(data_type).name


def fits_four_bits(qp: QParams | None) -> bool:
    """Are these low-bit codes (at most 4 bits, in an int8/uint8 container) INT4/UINT4-sized?"""
    return (
        qp is not None
        and qp.dtype in FOUR_BIT_TYPES
        and qp.code_bits is not None
        and qp.code_bits <= 4
    )


def four_bit_spec(spec: object) -> bool:
    """Can this spec's op take and return 4-bit tensors (a table, both sides' codes <= 4 bits)?"""
    return (
        isinstance(spec, LutSpec)
        and fits_four_bits(spec.in_qparams)
        and fits_four_bits(spec.out_qparams)
    )


def is_full_four_bit(qp: QParams) -> bool:
    """Do the codes span the 4-bit type's whole range (QuantizeLinear saturates right there)?"""
    return (qp.qmin, qp.qmax) == _FOUR_BIT_LIMITS[qp.dtype]


def four_bit_type(qp: QParams) -> int:
    """INT4 or UINT4 for codes that :func:`fits_four_bits`."""
    if not fits_four_bits(qp):
        raise SpecError(f"{qp.dtype} codes of {qp.bits} bits do not fit INT4/UINT4")
    return FOUR_BIT_TYPES[qp.dtype]


def four_bit_tensor(name: str, value: int, data_type: int) -> onnx.TensorProto:
    """A scalar INT4/UINT4 tensor (a zero point)."""
    return helper.make_tensor(name, data_type, [], [int(value)])


def _formula_body(spec: LutSpec, in_t: int, out_t: int) -> list[onnx.NodeProto] | None:
    """``DequantizeLinear -> Gelu -> QuantizeLinear`` on 4-bit codes, or None when no scale
    nudge gives every code its margin."""
    fit = fit_formula(spec)
    if fit is None or spec.out_qparams is None or fit.out_scale is None:
        return None
    qp, oq = spec.in_qparams, spec.out_qparams
    approximate = "none" if spec.form == "exact" else "tanh"
    zp_in = four_bit_tensor("in_zero_point", qp.zero_point, in_t)
    zp_out = four_bit_tensor("out_zero_point", oq.zero_point, out_t)
    return [
        const("in_scale", fit.in_scale, np.float32),
        helper.make_node("Constant", [], ["in_zero_point"], value=zp_in),
        helper.make_node("DequantizeLinear", ["X", "in_scale", "in_zero_point"], ["x"]),
        helper.make_node("Gelu", ["x"], ["g"], approximate=approximate),
        const("out_scale", fit.out_scale, np.float32),
        helper.make_node("Constant", [], ["out_zero_point"], value=zp_out),
        helper.make_node("QuantizeLinear", ["g", "out_scale", "out_zero_point"], ["Y"]),
    ]


def _table_body(spec: LutSpec, out_t: int, lut_body: LutBody) -> tuple[str, list[onnx.NodeProto]]:
    """``Cast(X, int32)`` -> the 8-bit table body on the codes -> ``Cast`` to 4 bits."""
    kind, nodes = table_body(spec.table, spec.in_qparams.qmin, lut_body)
    out: list[onnx.NodeProto] = [helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.INT32)]
    for n in nodes:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.input[:] = ["X32" if v == "X" else v for v in m.input]
        m.output[:] = ["Y8" if v == "Y" else v for v in m.output]
        out.append(m)
    out.append(helper.make_node("Cast", ["Y8"], ["Y"], to=out_t))
    return kind, out


def int4_lut_op(spec: LutSpec, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    """The ``GeluLut`` op of a table with 4-bit (or narrower) codes on INT4/UINT4 tensors.

    ``lut_body``: ``auto`` and ``gather-elements`` give the table body (``GatherElements``,
    faster in ORT than the formula), ``gather`` the ``Gather`` one, ``formula`` the formula
    body, for codes that span the 4-bit range, proved equal to the table (SpecError when it
    cannot be). ``verify`` runs the op on every code in ORT and onnx.reference."""
    if not four_bit_spec(spec):
        raise SpecError("INT4/UINT4 storage needs a table with at most 4-bit codes on both sides")
    if opset < INT4_OPSET:
        raise SpecError(f"INT4/UINT4 tensors need opset {INT4_OPSET}; the model has {opset}")
    qp, oq = spec.in_qparams, spec.out_qparams
    assert oq is not None
    in_t, out_t = four_bit_type(qp), four_bit_type(oq)
    attrs = _lut_attributes(spec)
    notes: list[str] = [f"codes stored as {FOUR_BIT_NAMES[in_t]} -> {FOUR_BIT_NAMES[out_t]}"]
    if lut_body == "auto":
        # measured (benchmarks/bench_int4_storage.py, ORT 1.32, one thread): the formula body's
        # INT4 DequantizeLinear/QuantizeLinear pair runs at 0.8-1.0x the speed of the table
        # body on a 32x128x1536 site, 0.8x in the digits ViT
        lut_body = "gather-elements"
        notes.append("4-bit codes: GatherElements (ORT runs it faster than the formula body)")
    if lut_body == "formula":
        problem = ""
        if not (is_full_four_bit(qp) and is_full_four_bit(oq)):
            problem = "codes narrower than 4 bits (QuantizeLinear would saturate to 4 bits)"
        elif spec.form == "quick":
            problem = "no 4-bit formula body for QuickGELU"
        else:
            body = _formula_body(spec, in_t, out_t)
            if body is None:
                problem = "codes on rounding boundaries, no scale nudge helps"
            else:
                vi = (
                    helper.make_tensor_value_info("X", in_t, None),
                    helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
                )
                op = CustomOp("GeluLut", attrs, tuple(body), opset, in_t, out_t, "formula", (), vi)
                problem = verify_int4_op(op, qp.codes(), spec.table) if verify else ""
                if not problem:
                    return dataclasses.replace(op, notes=tuple(notes))
                problem = f"rejected: {problem}"
        raise SpecError("cannot prove a 4-bit formula body equal to the table: " + problem)
    kind, body = _table_body(spec, out_t, lut_body)
    op = CustomOp("GeluLut", attrs, tuple(body), opset, in_t, out_t, kind, tuple(notes))
    if verify:  # the casts around the table are exact on every code: checked all the same
        problem = verify_int4_op(op, qp.codes(), spec.table)
        if problem:
            raise SpecError(f"the 4-bit table body differs from its table: {problem}")
    return op


def _container(four_bit_type: int) -> int:
    return TensorProto.INT8 if four_bit_type == TensorProto.INT4 else TensorProto.UINT8


def int4_probe_model(op: CustomOp) -> onnx.ModelProto:
    """A one-op model on 8-bit codes: ``Cast`` to the op's 4-bit input type, the op, ``Cast``
    back to the output's 8-bit container (ORT's Python API takes no INT4 arrays; both casts are
    exact on 4-bit codes)."""
    x_t, y_t = _container(op.input_type), _container(op.output_type)
    nodes = [
        helper.make_node("Cast", ["x"], ["x4"], to=op.input_type),
        op.node("x4", "y4", "op"),
        helper.make_node("Cast", ["y4"], ["y"], to=y_t),
    ]
    g = helper.make_graph(
        nodes,
        "gelu_quant_int4_op",
        [helper.make_tensor_value_info("x", x_t, [None])],
        [helper.make_tensor_value_info("y", y_t, [None])],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", op.opset), helper.make_opsetid(DOMAIN, 1)],
        functions=[op.function()],
    )
    m.ir_version = 10
    return m


def verify_int4_op(op: CustomOp, codes: npt.NDArray[Any], want: npt.NDArray[Any]) -> str:
    """Run the 4-bit op on ``codes`` (8-bit containers; each code at every position modulo 16)
    in ORT and onnx.reference; '' when both give ``want`` exactly."""
    m = int4_probe_model(op)
    x, y = position_probe(codes, want)
    problems = []
    for name, run in (("ORT", run_ort), ("onnx.reference", run_reference)):
        try:
            got = run(m, x)
        except Exception as e:  # a runtime without the kernel: the body is not usable
            problems.append(f"{name} cannot run it ({' '.join(str(e).split())[:200]})")
            continue
        if got.dtype != y.dtype or not np.array_equal(got, y):
            problems.append(f"{name} differs on {int(np.sum(got != y))} codes")
    return "; ".join(problems)
