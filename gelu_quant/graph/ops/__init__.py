"""The ``gelu_quant`` custom-op domain: one ONNX function per spec, generated from the spec;
one module per op kind.

Every approximation spec becomes a node of domain :data:`DOMAIN` (version 1) whose attributes
carry the spec's numbers (so a vendor compiler can map it to a native LUT or polynomial unit) and
whose meaning is a model-local ``FunctionProto`` of standard ONNX ops (so ONNX Runtime and
``onnx.reference`` run the model without a plugin). Node types:

``GeluLut``       int8/uint8/int16 codes in -> int8/uint8/int16 codes, float16 or float32 out;
                  tables of at most 4-bit codes at opset 21: int4/uint4 in and out
                  (:mod:`~gelu_quant.graph.ops.int4_codes`).
                  Attributes: ``table`` (tensor, entry ``q - qmin`` for input code ``q``),
                  ``in_scale``, ``in_zero_point``, ``out_scale``/``out_zero_point`` (integer
                  outputs), ``out_dtype``, ``form``.
``GeluInterpLut`` int8/uint8 codes in and out, an ``N``-segment table with integer linear
                  interpolation. Attributes: ``knots``, ``segments``, the qparams, ``form``.
``GeluPwlLut``    int8/uint8/int16 codes in and out, ``S`` segments with their own breakpoints
                  and int32 linear interpolation (:mod:`~gelu_quant.graph.ops.pwl_lut_op`).
                  Attributes: ``starts``, ``bases``, ``slopes``, ``shift``, ``segments``, the
                  qparams, ``form``.
``GeluPoly``      float16/float32 in and out, piecewise polynomial. Attributes: ``breakpoints``,
                  ``origins``, ``coefficients`` (tensors), ``lo``, ``hi``, ``compute_dtype``,
                  ``form``.
``GeluTanhFormula``, ``GeluQuick``  the float baselines (tanh formula, QuickGELU), op by op in
                  their compute dtype. Attributes: ``lo``, ``hi``, ``compute_dtype``, ``form``.
``GeluInt``       I-BERT's integer i-GELU (int32 arithmetic). Attributes: ``in_scale``,
                  ``in_bits``, ``q_b``, ``q_c``, ``q_1``, ``shift_bits``, ``out_scale``.

A node's ``op_type`` is the kind followed by a content hash of its body (``GeluLut_3fa2c1d09e4b``):
``onnx.reference`` ignores function overloads, so distinct bodies need distinct names. The kind
is the part before the last underscore (:func:`op_kind`). The body reads no attributes.

Function bodies (figures from ``benchmarks/bench_gelulut.py``, ORT 1.31, 32x128x1536 int8):

* **GELU tables** (:class:`~gelu_quant.lut.table.LutSpec`): ``Cast -> Gather`` is ~7x slower than
  the ``DequantizeLinear -> Gelu -> QuantizeLinear`` it replaces; ``GatherElements`` on the
  flattened tensor is as fast as DQ->Gelu->Q in ORT (onnx 1.23's reference ``GatherElements``
  takes at most 64 entries: :func:`reference_ops` supplies the spec's operator, as onnx PR #8444
  does upstream). The default body for GELU tables (``formula``)
  *recomputes* the table: ``DequantizeLinear -> Gelu -> QuantizeLinear`` (``Cast`` for float
  outputs) in models of opset 20 and later -- after ORT inlines the function, the very graph it
  replaces, at the same speed. Older opsets have no ``Gelu``: there the body is ``Cast -> Mul
  -> Sub`` (``x = float(q)·s - float(zp·s)``) and ``x·(1 + erf(x/√2))/2`` (or the tanh form)
  spelled out; ORT fuses the erf form into its Gelu kernel (not when a DequantizeLinear feeds
  the pattern: it then also duplicates the DQ per reader) and runs the tanh form op by op.
  The body equals the table on every input code because (1) the float64 GELU of every code's
  float32 input lies, with a margin of
  ``32·2⁻²⁴·(|x|+1)`` (14x the worst float32 GELU error measured for ORT's Gelu and Erf kernels
  and onnx.reference; ``tests/test_functions.py`` keeps checking a 4x margin), strictly inside
  the rounding interval of its table entry -- when a code sits on a rounding boundary, the body's
  scales are nudged (input and output scale, up to 80 parts per million, searched) until none
  does; and (2) the body is run on all codes with ORT (each code at every position modulo 16:
  vectorised kernels treat a block's tail differently) and ``onnx.reference`` at build time and
  must reproduce the table exactly. When no nudge works or a run disagrees, the body falls back
  to ``GatherElements`` (any table, as fast as DQ->Gelu->Q in ORT). In practice int8/uint8-output
  GELU tables get the formula body; float16/float32/int16 outputs and int16 inputs (65536 codes)
  do not (their rounding intervals are finer than float32 GELU's error) and use
  ``GatherElements``. QuickGELU tables have a formula body too (``DequantizeLinear -> Mul(1.702)
  -> Sigmoid -> Mul -> QuantizeLinear``, any opset, proved the same way, ``lut_body="formula"``),
  but ``auto`` gives them ``GatherElements``: ORT runs the formula at 0.42-0.53x the speed
  of DQ->Gelu->Q, GatherElements at 0.96-1.15x (``benchmarks/bench_gelulut.py``).
  :attr:`CustomOp.body_kind` says which body was used; ``lut_body="gather"`` asks for
  ``Cast -> Gather`` (~7x slower in ORT).
* **Interpolated tables**: ``GatherElements`` of the equivalent 256-entry table (the attributes
  keep the knots).
* **Polynomials**: the exact operation sequence of :meth:`PolySpec.evaluate`: segment index by
  comparisons with the inner breakpoints (beyond 16 segments a branchless binary search over
  the breakpoint table, log2 rounds of ``GatherElements`` + ``GreaterOrEqual``), per-segment
  origin and coefficients by ``GatherElements`` on flat tensors (at most 63 segments),
  Horner with one rounding per op, tails by ``Where``. Float16 arithmetic is float32 ops each
  followed by ``Cast`` to float16 and back: ORT's CPU kernels otherwise run a float16 chain in
  float32 and drop the intermediate roundings.
* **Baselines**: their op sequences the same way; I-BERT's i-GELU in int32 (floor division by
  ``2**n`` as ``(a - Mod(a, 2**n)) / 2**n``).
"""

from __future__ import annotations

# the op modules register their builders with custom_op on import
from gelu_quant.graph.ops import (  # noqa: F401
    float_formula_op,
    grouped_lut_op,
    igelu_op,
    interp_lut_op,
    lut_op,
    poly_op,
    pwl_lut_op,
)
from gelu_quant.graph.ops.custom_op import (
    DOMAIN,
    DOMAIN_VERSION,
    LUT_BODIES,
    MIN_OPSET,
    CustomOp,
    LutBody,
    custom_op,
    onnx_type,
    op_kind,
    register_body,
    supported_specs,
)

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "LUT_BODIES",
    "MIN_OPSET",
    "CustomOp",
    "LutBody",
    "custom_op",
    "onnx_type",
    "op_kind",
    "register_body",
    "supported_specs",
]
