"""The ``gelu_quant`` custom-op domain: one ONNX function per spec, generated from the spec.

Every approximation spec becomes a node of domain :data:`DOMAIN` (version 1) whose attributes
carry the spec's numbers (so a vendor compiler can map it to a native LUT or polynomial unit) and
whose meaning is a model-local ``FunctionProto`` of standard ONNX ops (so ONNX Runtime and
``onnx.reference`` run the model without a plugin). Node types:

``GeluLut``       int8/uint8/int16 codes in -> int8/uint8/int16 codes, float16 or float32 out.
                  Attributes: ``table`` (tensor, entry ``q - qmin`` for input code ``q``),
                  ``in_scale``, ``in_zero_point``, ``out_scale``/``out_zero_point`` (integer
                  outputs), ``out_dtype``, ``form``.
``GeluInterpLut`` int8/uint8 codes in and out, an ``N``-segment table with integer linear
                  interpolation. Attributes: ``knots``, ``segments``, the qparams, ``form``.
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

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.numerics import QUICK_ALPHA, gelu

DOMAIN = "gelu_quant"
DOMAIN_VERSION = 1
MIN_OPSET = 13
"""Oldest default-domain opset a body can be written in."""

LutBody = Literal["auto", "formula", "gather", "gather-elements"]
LUT_BODIES: tuple[LutBody, ...] = ("auto", "formula", "gather", "gather-elements")
"""``auto``: the formula body when it is proved equal to the table, else ``gather-elements``
(``GatherElements`` on the flattened tensor: any table, as fast as DQ->Gelu->Q in ORT; run it in
onnx.reference with :func:`reference_ops`); ``gather``: ``Cast -> Gather`` (slow in ORT)."""

GELU_ERROR_MARGIN = 32.0
"""Float32 GELU error bound assumed for the formula body, in units of ``2⁻²⁴·(|x|+1)``."""

_NP_TO_ONNX: dict[str, int] = {
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
}


def onnx_type(dtype: str | np.dtype[Any] | type[np.generic]) -> int:
    """ONNX element type of a numpy dtype (or its name)."""
    name = np.dtype(dtype).name
    try:
        return _NP_TO_ONNX[name]
    except KeyError:
        raise SpecError(f"no ONNX element type for dtype {name}") from None


@dataclass(frozen=True)
class CustomOp:
    """A spec turned into a custom-domain node type: attributes, body, and how to call it."""

    kind: str
    """``GeluLut``, ``GeluInterpLut``, ``GeluPoly``, …"""
    attributes: tuple[onnx.AttributeProto, ...]
    body: tuple[onnx.NodeProto, ...]
    """Standard-ONNX nodes computing ``Y`` from ``X``."""
    opset: int
    """Default-domain opset the body is written in (the model's)."""
    input_type: int
    output_type: int
    body_kind: str
    """Which body was generated (``formula``, ``gather``, ``poly``, …)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    value_info: tuple[onnx.ValueInfoProto, ...] = ()
    """Types of body tensors (onnx.reference needs them to expand context-dependent ops such
    as ``Gelu`` inside a function)."""

    @property
    def digest(self) -> str:
        """Content hash of the body (and its opset)."""
        h = hashlib.sha256(f"{self.kind}|{self.opset}|".encode())
        for n in self.body:
            h.update(n.SerializeToString(deterministic=True))
        return h.hexdigest()[:12]

    @property
    def op_type(self) -> str:
        """The node's op type and the function's name: ``<kind>_<digest>``."""
        return f"{self.kind}_{self.digest}"

    def function(self) -> onnx.FunctionProto:
        """The model-local function defining the op."""
        fn = helper.make_function(
            DOMAIN,
            self.op_type,
            ["X"],
            ["Y"],
            list(self.body),
            [helper.make_opsetid("", self.opset)],
            attributes=[a.name for a in self.attributes],
        )
        fn.value_info.extend(self.value_info)
        return fn

    def node(self, x: str, y: str, name: str) -> onnx.NodeProto:
        """A node calling the function on tensor ``x``, writing ``y``."""
        n = helper.make_node(self.op_type, [x], [y], name=name, domain=DOMAIN)
        n.attribute.extend(self.attributes)
        return n


def op_kind(op_type: str) -> str:
    """``GeluLut`` for ``GeluLut_3fa2c1d09e4b``."""
    return op_type.rsplit("_", 1)[0]


# -- registry ----------------------------------------------------------------
BodyBuilder = Callable[..., CustomOp]
_BUILDERS: dict[type[GeluApprox], BodyBuilder] = {}
F = TypeVar("F", bound=BodyBuilder)


def register_body(spec_type: type[GeluApprox]) -> Callable[[F], F]:
    """Decorator: ``builder(spec, *, opset, lut_body, verify) -> CustomOp`` for a spec type."""

    def deco(fn: F) -> F:
        _BUILDERS[spec_type] = fn
        return fn

    return deco


def supported_specs() -> tuple[type[GeluApprox], ...]:
    """Spec types that have a function body."""
    return tuple(_BUILDERS)


def custom_op(
    spec: GeluApprox, *, opset: int = 21, lut_body: LutBody = "auto", verify: bool = True
) -> CustomOp:
    """The custom op for ``spec`` with its body written in default-domain ``opset``.

    ``lut_body`` chooses the body of GELU tables (``auto``: the formula body when it is proved
    equal to the table, else ``gather-elements``); ``verify`` runs formula bodies on every input
    code in ORT and onnx.reference before accepting them.
    """
    if opset < MIN_OPSET:
        raise ModelError(
            f"the model imports default-domain opset {opset}; gelu-quant bodies need at least "
            f"{MIN_OPSET} (upgrade the model with onnx.version_converter)"
        )
    if lut_body not in LUT_BODIES:
        raise SpecError(f"unknown LUT body {lut_body!r}; expected one of {', '.join(LUT_BODIES)}")
    for t in type(spec).__mro__:
        if t in _BUILDERS:
            return _BUILDERS[t](spec, opset=opset, lut_body=lut_body, verify=verify)
    raise SpecError(
        f"no ONNX function body for spec kind {spec.kind!r}; supported: "
        + ", ".join(sorted(t.kind for t in _BUILDERS))
    )


# -- small helpers ----------------------------------------------------------------
def const(name: str, value: npt.ArrayLike, dtype: Any = None) -> onnx.NodeProto:
    """A ``Constant`` node producing ``name``."""
    arr = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name))


def _tensor_attr(name: str, arr: npt.NDArray[Any]) -> onnx.AttributeProto:
    return helper.make_attribute(name, numpy_helper.from_array(np.ascontiguousarray(arr), name))


def gather_body(table: npt.NDArray[Any], qmin: int) -> list[onnx.NodeProto]:
    """``Y = table[X - qmin]`` with ``Cast`` and ``Gather`` (negative indices wrap)."""
    data = np.roll(np.ascontiguousarray(table), qmin) if qmin else np.ascontiguousarray(table)
    return [
        const("table", data),
        helper.make_node("Cast", ["X"], ["index"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "index"], ["Y"], axis=0),
    ]


def gather_elements_body(table: npt.NDArray[Any], qmin: int) -> list[onnx.NodeProto]:
    """``Y = table[X - qmin]`` with ``GatherElements`` on the flattened input (ORT-fast)."""
    data = np.roll(np.ascontiguousarray(table), qmin) if qmin else np.ascontiguousarray(table)
    return [
        const("table", data),
        helper.make_node("Shape", ["X"], ["shape"]),
        const("minus1", [-1], np.int64),
        helper.make_node("Reshape", ["X", "minus1"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["index"], to=TensorProto.INT32),
        helper.make_node("GatherElements", ["table", "index"], ["y"], axis=0),
        helper.make_node("Reshape", ["y", "shape"], ["Y"]),
    ]


def _table_body(
    table: npt.NDArray[Any], qmin: int, lut_body: LutBody
) -> tuple[str, tuple[onnx.NodeProto, ...]]:
    """The general table body: ``GatherElements`` unless ``Gather`` is asked for by name."""
    if lut_body == "gather":
        return "gather", tuple(gather_body(table, qmin))
    return "gather-elements", tuple(gather_elements_body(table, qmin))


def gelu_formula_nodes(x: str, y: str, form: str, prefix: str = "") -> list[onnx.NodeProto]:
    """GELU of float32 ``x`` as exporters spell it (ORT fuses exact and tanh into its Gelu
    kernel; QuickGELU is ``x * Sigmoid(1.702 x)``)."""
    p = prefix
    if form == "quick":
        return [
            const(f"{p}alpha", QUICK_ALPHA, np.float32),
            helper.make_node("Mul", [x, f"{p}alpha"], [f"{p}z"]),
            helper.make_node("Sigmoid", [f"{p}z"], [f"{p}sig"]),
            helper.make_node("Mul", [x, f"{p}sig"], [y]),
        ]
    if form == "exact":
        return [
            const(f"{p}sqrt2", math.sqrt(2.0), np.float32),
            const(f"{p}one", 1.0, np.float32),
            const(f"{p}half", 0.5, np.float32),
            helper.make_node("Div", [x, f"{p}sqrt2"], [f"{p}scaled"]),
            helper.make_node("Erf", [f"{p}scaled"], [f"{p}erf"]),
            helper.make_node("Add", [f"{p}erf", f"{p}one"], [f"{p}cdf2"]),
            helper.make_node("Mul", [x, f"{p}cdf2"], [f"{p}xcdf2"]),
            helper.make_node("Mul", [f"{p}xcdf2", f"{p}half"], [y]),
        ]
    if form == "tanh":
        return [
            const(f"{p}c3", 0.044715, np.float32),
            const(f"{p}k", math.sqrt(2.0 / math.pi), np.float32),
            const(f"{p}one", 1.0, np.float32),
            const(f"{p}half", 0.5, np.float32),
            helper.make_node("Mul", [x, x], [f"{p}x2"]),
            helper.make_node("Mul", [f"{p}x2", f"{p}c3"], [f"{p}cx2"]),
            helper.make_node("Add", [f"{p}cx2", f"{p}one"], [f"{p}inner1"]),
            helper.make_node("Mul", [x, f"{p}inner1"], [f"{p}inner2"]),
            helper.make_node("Mul", [f"{p}inner2", f"{p}k"], [f"{p}inner"]),
            helper.make_node("Tanh", [f"{p}inner"], [f"{p}tanh"]),
            helper.make_node("Add", [f"{p}tanh", f"{p}one"], [f"{p}cdf2"]),
            helper.make_node("Mul", [x, f"{p}cdf2"], [f"{p}xcdf2"]),
            helper.make_node("Mul", [f"{p}xcdf2", f"{p}half"], [y]),
        ]
    raise SpecError(f"unknown GELU form {form!r}")


# -- running a body on given inputs (build-time verification, tests) --------------------------
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


# -- GeluLut -------------------------------------------------------------------------------------
def _lut_attributes(spec: Any) -> tuple[onnx.AttributeProto, ...]:
    attrs = [
        _tensor_attr("table", spec.table),
        helper.make_attribute("in_scale", float(spec.in_qparams.scale)),
        helper.make_attribute("in_zero_point", int(spec.in_qparams.zero_point)),
        helper.make_attribute("out_dtype", spec.out_dtype),
        helper.make_attribute("form", spec.form),
    ]
    if spec.out_qparams is not None:
        attrs += [
            helper.make_attribute("out_scale", float(spec.out_qparams.scale)),
            helper.make_attribute("out_zero_point", int(spec.out_qparams.zero_point)),
        ]
    # low-bit codes in an 8-bit container: their widths (absent for full-width codes)
    if getattr(spec.in_qparams, "code_bits", None) is not None:
        attrs.append(helper.make_attribute("in_bits", int(spec.in_qparams.code_bits)))
    if getattr(spec.out_qparams, "code_bits", None) is not None:
        attrs.append(helper.make_attribute("out_bits", int(spec.out_qparams.code_bits)))
    return tuple(attrs)


@dataclass(frozen=True)
class FormulaFit:
    """Scales for the formula body under which every code provably lands on its table entry."""

    in_scale: float
    out_scale: float | None
    nudged: bool


def dequantize_mul_sub(q: npt.NDArray[Any], scale: float, zero_point: int) -> npt.NDArray[Any]:
    """``float32(q)·s − float32(zp·s)`` in float32, two roundings: the opset < 20 body's input."""
    s32 = np.float32(scale)
    c32 = np.float32(np.float64(zero_point) * np.float64(s32))
    return ((q.astype(np.float32) * s32).astype(np.float32) - c32).astype(np.float32)


def _margin_ok(
    spec: Any, s_in: np.float32, s_out: npt.NDArray[np.float32] | None, mul_sub: bool = False
) -> Any:
    """For each candidate output scale: does every code round to its entry with margin?"""
    qp = spec.in_qparams
    codes = qp.codes().astype(np.int64)
    if mul_sub:
        x = dequantize_mul_sub(codes, float(s_in), qp.zero_point)
    else:
        x = ((codes - qp.zero_point).astype(np.float64) * np.float64(s_in)).astype(np.float32)
    x64 = x.astype(np.float64)
    g = gelu(x64, spec.form)
    err = GELU_ERROR_MARGIN * 2.0**-24 * (np.abs(x64) + 1.0)
    if s_out is None:  # float16 output: Cast rounds to nearest even
        ftype = np.float16 if spec.out_dtype == "float16" else np.float32
        lo, hi = (g - err).astype(ftype), (g + err).astype(ftype)
        return np.array([bool(np.all((lo == hi) & (lo == spec.table)))])
    oq = spec.out_qparams
    so = s_out.astype(np.float64)[:, None]
    v = g[None, :] / so + oq.zero_point
    tol = err[None, :] / so + 4.0 * 2.0**-24 * (np.abs(v) + 1.0)
    a = np.clip(np.rint(v - tol), oq.qmin, oq.qmax)
    b = np.clip(np.rint(v + tol), oq.qmin, oq.qmax)
    t = spec.table.astype(np.float64)[None, :]
    return np.all((a == b) & (a == t), axis=1)


_NUDGES = (0, 1, -1, 2, -2, 3, -3, 5, -5, 8, -8, 13, -13, 20, -20, 30, -30, 50, -50, 80, -80)
"""Relative scale perturbations tried, in parts per million (smallest first)."""


def fit_formula(
    spec: Any, *, max_codes_for_search: int = 256, mul_sub: bool = False
) -> FormulaFit | None:
    """Find input/output scales that make the formula body reproduce ``spec.table``.

    Returns None when no perturbation in :data:`_NUDGES` gives every code its margin.
    """
    s_in0 = np.float32(spec.in_qparams.scale)
    float_out = spec.out_qparams is None
    nudges = _NUDGES if spec.table.size <= max_codes_for_search else (0,)
    out_cands = None
    if not float_out:
        s_out0 = np.float64(spec.out_qparams.scale)
        out_cands = np.array([s_out0 * (1.0 + 1e-6 * e) for e in nudges], dtype=np.float32)
        out_cands[0] = np.float32(spec.out_qparams.scale)
    for d in nudges:
        s_in = np.float32(np.float64(s_in0) * (1.0 + 1e-6 * d)) if d else s_in0
        ok = _margin_ok(spec, s_in, out_cands, mul_sub)
        if ok.any():
            j = int(np.argmax(ok))
            s_out = None if out_cands is None else float(out_cands[j])
            return FormulaFit(float(s_in), s_out, nudged=bool(d or j))
    return None


def _formula_body(spec: Any, fit: FormulaFit, opset: int) -> list[onnx.NodeProto]:
    qp = spec.in_qparams
    if spec.form == "quick":
        # QuickGELU at any opset: DequantizeLinear -> x * Sigmoid(1.702 x) -> QuantizeLinear
        nodes = [
            const("in_scale", fit.in_scale, np.float32),
            const("in_zero_point", qp.zero_point, qp.np_dtype),
            helper.make_node("DequantizeLinear", ["X", "in_scale", "in_zero_point"], ["x"]),
            const("alpha", QUICK_ALPHA, np.float32),
            helper.make_node("Mul", ["x", "alpha"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["sig"]),
            helper.make_node("Mul", ["x", "sig"], ["g"]),
        ]
    elif opset >= 20:  # the Gelu op: exactly the DQ -> Gelu -> Q it replaces, as fast
        approximate = "none" if spec.form == "exact" else "tanh"
        nodes = [
            const("in_scale", fit.in_scale, np.float32),
            const("in_zero_point", qp.zero_point, qp.np_dtype),
            helper.make_node("DequantizeLinear", ["X", "in_scale", "in_zero_point"], ["x"]),
            helper.make_node("Gelu", ["x"], ["g"], approximate=approximate),
        ]
    else:
        # No Gelu op before opset 20. A DequantizeLinear feeding the formula stops ORT from
        # fusing it into its Gelu kernel (and is duplicated per reader), Cast -> Mul -> Sub
        # does not: x = float(q)·s - float(zp·s), modelled exactly by dequantize_mul_sub.
        s32 = np.float32(fit.in_scale)
        nodes = [
            helper.make_node("Cast", ["X"], ["q"], to=TensorProto.FLOAT),
            const("in_scale", s32, np.float32),
            const("in_offset", np.float64(qp.zero_point) * np.float64(s32), np.float32),
            helper.make_node("Mul", ["q", "in_scale"], ["qs"]),
            helper.make_node("Sub", ["qs", "in_offset"], ["x"]),
        ]
        nodes += gelu_formula_nodes("x", "g", spec.form)
    if spec.out_qparams is None:
        nodes.append(helper.make_node("Cast", ["g"], ["Y"], to=onnx_type(spec.out_dtype)))
    else:
        oq = spec.out_qparams
        assert fit.out_scale is not None
        nodes += [
            const("out_scale", fit.out_scale, np.float32),
            const("out_zero_point", oq.zero_point, oq.np_dtype),
            helper.make_node("QuantizeLinear", ["g", "out_scale", "out_zero_point"], ["Y"]),
        ]
    return nodes


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


def _lut_op(spec: Any, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    qp = spec.in_qparams
    in_t, out_t = onnx_type(qp.np_dtype), onnx_type(spec.table.dtype)
    attrs = _lut_attributes(spec)
    int16 = qp.dtype == "int16" or spec.out_dtype == "int16"
    notes: list[str] = []
    if lut_body == "auto" and spec.form == "quick":
        # measured (benchmarks/bench_gelulut.py): x·Sigmoid(1.702x) behind a DequantizeLinear
        # runs at 0.42-0.53x the speed of DQ -> Gelu -> Q, GatherElements at 0.96-1.15x
        lut_body = "gather-elements"
        notes.append("QuickGELU table: GatherElements (faster than its formula body)")
    elif lut_body == "auto" and opset < 20:
        # no Gelu op before opset 20: the spelled-out formula runs at 0.33x (tanh) and 0.66x
        # (erf) the speed of DQ -> Gelu -> Q, GatherElements at 1.1x (bench_gelulut.py)
        lut_body = "gather-elements"
        notes.append(f"opset {opset} has no Gelu op: GatherElements (faster than the formula)")
    low_bit = qp.code_bits is not None or getattr(spec.out_qparams, "code_bits", None) is not None
    if lut_body in ("auto", "formula"):
        fit = None
        if low_bit:  # the body's QuantizeLinear would saturate to the container's range
            notes.append("low-bit codes: table body (GatherElements)")
        elif int16 and opset < 21:
            notes.append(f"formula body needs opset 21 for int16 Q/DQ (model has {opset})")
        else:
            fit = fit_formula(spec, mul_sub=opset < 20 and spec.form != "quick")
            if fit is None:
                notes.append("formula body: codes on rounding boundaries, no scale nudge helps")
        if fit is not None:
            vi = (
                helper.make_tensor_value_info("X", in_t, None),
                helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
            )
            body = tuple(_formula_body(spec, fit, opset))
            op = CustomOp("GeluLut", attrs, body, opset, in_t, out_t, "formula", (), vi)
            if fit.nudged:
                notes.append(
                    f"formula body with nudged scales in={fit.in_scale!r} out={fit.out_scale!r}"
                )
            problem = verify_on_all_codes(op, qp.codes(), spec.table) if verify else ""
            if not problem:
                return dataclasses.replace(op, notes=tuple(notes))
            notes.append(f"formula body rejected: {problem}")
        if lut_body == "formula":
            raise SpecError("cannot prove a formula body equal to the table: " + "; ".join(notes))
    kind, body = _table_body(spec.table, qp.qmin, lut_body)
    return CustomOp("GeluLut", attrs, body, opset, in_t, out_t, kind, tuple(notes))


def _interp_op(spec: Any, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    qp, oq = spec.in_qparams, spec.out_qparams
    attrs = (
        _tensor_attr("knots", spec.knots),
        helper.make_attribute("segments", int(spec.segments)),
        helper.make_attribute("in_scale", float(qp.scale)),
        helper.make_attribute("in_zero_point", int(qp.zero_point)),
        helper.make_attribute("out_scale", float(oq.scale)),
        helper.make_attribute("out_zero_point", int(oq.zero_point)),
        helper.make_attribute("form", spec.form),
    )
    kind, body = _table_body(spec.full_table(), qp.qmin, lut_body)
    return CustomOp(
        "GeluInterpLut", attrs, body, opset, onnx_type(qp.np_dtype), onnx_type(oq.np_dtype), kind
    )


# -- GeluPoly ------------------------------------------------------------------------------------
MAX_POLY_SEGMENTS = 63
"""onnx.reference's GatherElements (numpy ``choose``) takes at most 63 entries."""
LINEAR_SEARCH_SEGMENTS = 16
"""Up to this many segments the body finds a segment by one comparison per breakpoint; beyond,
by a binary search over the breakpoint table (log2 rounds)."""


def poly_body(spec: Any) -> list[onnx.NodeProto]:
    """The operation sequence of :meth:`PolySpec.evaluate` in standard ONNX ops.

    Float16 arithmetic is written as float32 ops each followed by ``Cast`` to float16 and back:
    ORT's CPU kernels run float16 Add/Mul/Sub in float32 and drop the intermediate roundings of
    a float16 chain, while a float16 product or sum computed in float32 and rounded once is what
    numpy (the spec's reference) computes.
    """
    io, cp = spec.io_dtype, spec.compute_dtype
    npio = np.dtype(io).type
    k_seg, deg = spec.segments, spec.degree
    if k_seg > MAX_POLY_SEGMENTS:
        raise SpecError(f"{k_seg} segments: the ONNX body supports at most {MAX_POLY_SEGMENTS}")
    round16 = cp == "float16"
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        const("minus1", [-1], np.int64),
        helper.make_node("Reshape", ["X", "minus1"], ["x"]),
    ]

    def op(op_type: str, a: str, b: str, out: str) -> None:
        if not round16:
            nodes.append(helper.make_node(op_type, [a, b], [out]))
            return
        nodes.extend(
            [
                helper.make_node(op_type, [a, b], [f"{out}_f32"]),
                helper.make_node("Cast", [f"{out}_f32"], [f"{out}_f16"], to=TensorProto.FLOAT16),
                helper.make_node("Cast", [f"{out}_f16"], [out], to=TensorProto.FLOAT),
            ]
        )

    xc = "x"
    if io != "float32":
        nodes.append(helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT))
        xc = "xc"
    # float16 values are exact in float32: the arithmetic dtype is float32 throughout
    coefs = spec.coefficients.astype(np.float32)
    origins = np.asarray(spec.origins, dtype=np.float32)
    if k_seg > LINEAR_SEARCH_SEGMENTS:
        # k = number of inner breakpoints <= x by a branchless binary search: the inner
        # breakpoints padded with +inf to 2^m - 1 entries, m rounds of
        # pos += step * (x >= B[pos + step - 1]) -- 6 rounds for 48 segments instead of 47
        # comparisons; coefficient tables padded to 2^m entries (the padding is never used
        # for finite x: +inf > x)
        inner = list(spec.breakpoints[1:-1])
        m = max(1, math.ceil(math.log2(len(inner) + 1)))
        size = (1 << m) - 1
        table = np.full(size, np.inf, np.float32)
        table[: len(inner)] = inner
        pad = (1 << m) - k_seg
        coefs = np.concatenate([coefs, np.repeat(coefs[-1:], pad, axis=0)])
        origins = np.concatenate([origins, np.repeat(origins[-1:], pad)])
        nodes += [
            const("bp_table", table),
            helper.make_node("Shape", ["x"], ["flat_shape"]),
            const("zero_i", np.zeros(1, np.int32)),
            helper.make_node("Expand", ["zero_i", "flat_shape"], ["pos0"]),
        ]
        pos = "pos0"
        step = 1 << (m - 1)
        r = 0
        while step >= 1:
            r += 1
            nodes += [
                const(f"step{r}", np.int32(step)),
                const(f"probe_off{r}", np.int32(step - 1)),
                helper.make_node("Add", [pos, f"probe_off{r}"], [f"probe{r}"]),
                helper.make_node("GatherElements", ["bp_table", f"probe{r}"], [f"b{r}"], axis=0),
                helper.make_node("GreaterOrEqual", [xc, f"b{r}"], [f"ge{r}"]),
                helper.make_node("Cast", [f"ge{r}"], [f"ge{r}_i"], to=TensorProto.INT32),
                helper.make_node("Mul", [f"ge{r}_i", f"step{r}"], [f"inc{r}"]),
                helper.make_node("Add", [pos, f"inc{r}"], [f"pos{r}"]),
            ]
            pos = f"pos{r}"
            step //= 2
        k_name = pos
        nodes += [
            const("origins", origins),
            helper.make_node("GatherElements", ["origins", k_name], ["origin"], axis=0),
        ]
        for j in range(deg + 1):
            nodes += [
                const(f"c{j}_table", np.ascontiguousarray(coefs[:, j])),
                helper.make_node("GatherElements", [f"c{j}_table", k_name], [f"c{j}"], axis=0),
            ]
    elif k_seg > 1:
        # k = number of inner breakpoints <= x, one scalar comparison each (float32: exact for
        # float16 values; ORT's broadcast [N, K-1] comparison is 10x slower)
        for j, b in enumerate(spec.breakpoints[1:-1], start=1):
            nodes += [
                const(f"b{j}", b, np.float32),
                helper.make_node("GreaterOrEqual", [xc, f"b{j}"], [f"ge{j}"]),
                helper.make_node("Cast", [f"ge{j}"], [f"ge{j}_i"], to=TensorProto.INT32),
            ]
            if j > 1:
                prev = "ge1_i" if j == 2 else f"k{j - 1}"
                nodes.append(helper.make_node("Add", [prev, f"ge{j}_i"], [f"k{j}"]))
        k_name = "ge1_i" if k_seg == 2 else f"k{k_seg - 1}"
        nodes += [
            const("origins", origins),
            helper.make_node("GatherElements", ["origins", k_name], ["origin"], axis=0),
        ]
        for j in range(deg + 1):
            nodes += [
                const(f"c{j}_table", np.ascontiguousarray(coefs[:, j])),
                helper.make_node("GatherElements", [f"c{j}_table", k_name], [f"c{j}"], axis=0),
            ]
    else:
        nodes.append(const("origin", origins[0]))
        nodes += [const(f"c{j}", coefs[0, j]) for j in range(deg + 1)]
    op("Sub", xc, "origin", "t")
    acc = f"c{deg}"
    for j in range(deg - 1, -1, -1):
        op("Mul", acc, "t", f"m{j}")
        op("Add", f"m{j}", f"c{j}", f"a{j}")
        acc = f"a{j}"
    if io != "float32":
        nodes.append(helper.make_node("Cast", [acc], ["y_poly"], to=onnx_type(io)))
        acc = "y_poly"
    nodes += [
        const("lo", spec.lo, np.float32),
        const("hi", spec.hi, np.float32),
        const("zero", 0.0, npio),
        helper.make_node("Less", [xc, "lo"], ["below"]),
        helper.make_node("Where", ["below", "zero", acc], ["y_lo"]),
        helper.make_node("Greater", [xc, "hi"], ["beyond"]),
        helper.make_node("Where", ["beyond", "x", "y_lo"], ["y"]),
        helper.make_node("Reshape", ["y", "shape"], ["Y"]),
    ]
    return nodes


def _poly_op(spec: Any, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    attrs = (
        _tensor_attr("breakpoints", np.asarray(spec.breakpoints, dtype=spec.io_dtype)),
        _tensor_attr("origins", np.asarray(spec.origins, dtype=spec.compute_dtype)),
        _tensor_attr("coefficients", spec.coefficients),
        helper.make_attribute("lo", float(spec.lo)),
        helper.make_attribute("hi", float(spec.hi)),
        helper.make_attribute("compute_dtype", spec.compute_dtype),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp("GeluPoly", attrs, tuple(poly_body(spec)), opset, t, t, "poly")


# -- baselines ---------------------------------------------------------------------------------
class _Seq:
    """Builds a float body op by op; with ``round16`` every result is rounded to float16
    (computed in float32, then ``Cast`` to float16 and back), as numpy's float16 ops do."""

    def __init__(self, round16: bool) -> None:
        self.round16 = round16
        self.nodes: list[onnx.NodeProto] = []
        self.n = 0

    def op(self, op_type: str, *inputs: str, exact: bool = False) -> str:
        self.n += 1
        out = f"v{self.n}"
        if not self.round16 or exact:
            self.nodes.append(helper.make_node(op_type, list(inputs), [out]))
            return out
        self.nodes += [
            helper.make_node(op_type, list(inputs), [f"{out}_f32"]),
            helper.make_node("Cast", [f"{out}_f32"], [f"{out}_f16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [f"{out}_f16"], [out], to=TensorProto.FLOAT),
        ]
        return out

    def const(self, name: str, value: float, dtype: str) -> str:
        # constants rounded to the compute dtype, held in float32 (exact)
        self.nodes.append(const(name, np.float32(np.dtype(dtype).type(value))))
        return name


def _float_formula_body(spec: Any) -> list[onnx.NodeProto]:
    """TanhGeluSpec / QuickGeluSpec: the spec's op sequence, each op rounded to compute dtype."""
    from gelu_quant.lut.baselines import QuickGeluSpec, TanhGeluSpec

    cp = spec.compute_dtype
    seq = _Seq(round16=cp == "float16")
    seq.nodes.append(helper.make_node("Cast", ["X"], ["xf32"], to=TensorProto.FLOAT))
    x = "xf32"
    if cp == "float16" and spec.io_dtype == "float32":  # x.astype(io).astype(cp)
        x = seq.op("Identity", x)
    if isinstance(spec, TanhGeluSpec):
        c3 = seq.const("c3", 0.044715, cp)
        k = seq.const("k", math.sqrt(2.0 / math.pi), cp)
        one = seq.const("one", 1.0, cp)
        half = seq.const("half", 0.5, cp)
        x3 = seq.op("Mul", seq.op("Mul", x, x), x)
        v = seq.op("Add", x, seq.op("Mul", c3, x3))
        w = seq.op("Mul", k, v)
        s_ = seq.op("Add", one, seq.op("Tanh", w))
        y = seq.op("Mul", seq.op("Mul", half, x), s_)
    elif isinstance(spec, QuickGeluSpec):
        a = seq.const("alpha", 1.702, cp)
        one = seq.const("one", 1.0, cp)
        z = seq.op("Mul", a, x)
        e = seq.op("Exp", seq.op("Neg", z, exact=True))
        sig = seq.op("Div", one, seq.op("Add", one, e))
        y = seq.op("Mul", x, sig)
    else:  # pragma: no cover - registry guarantees the type
        raise SpecError(f"no formula body for {spec.kind}")
    seq.nodes.append(helper.make_node("Cast", [y], ["Y"], to=onnx_type(spec.io_dtype)))
    return seq.nodes


def _float_formula_op(spec: Any, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    kind = "GeluTanhFormula" if spec.kind == "tanh-formula" else "GeluQuick"
    attrs = (
        helper.make_attribute("lo", float(spec.lo)),
        helper.make_attribute("hi", float(spec.hi)),
        helper.make_attribute("compute_dtype", spec.compute_dtype),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp(kind, attrs, tuple(_float_formula_body(spec)), opset, t, t, "formula")


def igelu_body(spec: Any, opset: int) -> list[onnx.NodeProto]:
    """I-BERT's i-GELU (:func:`gelu_quant.lut.baselines.igelu_int`) in int32 ONNX ops."""
    k = spec.constants
    qp = spec.qparams
    if qp.dtype == "int16" and opset < 21:
        raise ModelError(f"16-bit i-GELU needs opset 21 for int16 QuantizeLinear (model: {opset})")
    i32 = np.int32
    nodes = [
        helper.make_node("Cast", ["X"], ["x32"], to=TensorProto.FLOAT),
        const("scale", qp.scale, np.float32),
        const("zero", 0, qp.np_dtype),
        helper.make_node("QuantizeLinear", ["x32", "scale", "zero"], ["q8"]),
        helper.make_node("Cast", ["q8"], ["q"], to=TensorProto.INT32),
        const("neg_q_b", -k.q_b, i32),
        const("q_b", k.q_b, i32),
        const("q_c", k.q_c, i32),
        const("q_1", k.q_1, i32),
        helper.make_node("Abs", ["q"], ["q_abs0"]),
        helper.make_node("Min", ["q_abs0", "neg_q_b"], ["q_abs"]),
        helper.make_node("Add", ["q_abs", "q_b"], ["base"]),
        helper.make_node("Mul", ["base", "base"], ["sq"]),
        helper.make_node("Add", ["sq", "q_c"], ["q_l"]),
        helper.make_node("Sign", ["q"], ["sign"]),
        helper.make_node("Mul", ["sign", "q_l"], ["signed"]),
    ]
    erf = "signed"
    if k.shift_bits:
        # floor division by 2^n: subtract the (non-negative) remainder, then divide exactly
        nodes += [
            const("pow2", 1 << k.shift_bits, i32),
            helper.make_node("Mod", ["signed", "pow2"], ["rem"], fmod=0),
            helper.make_node("Sub", ["signed", "rem"], ["floored"]),
            helper.make_node("Div", ["floored", "pow2"], ["q_erf"]),
        ]
        erf = "q_erf"
    nodes += [
        helper.make_node("Add", [erf, "q_1"], ["inner"]),
        helper.make_node("Mul", ["q", "inner"], ["q_out"]),
        helper.make_node("Cast", ["q_out"], ["q_out64"], to=TensorProto.DOUBLE),
        const("s_out", k.s_out, np.float64),
        helper.make_node("Mul", ["q_out64", "s_out"], ["y64"]),
        helper.make_node("Cast", ["y64"], ["y32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["y32"], ["y_io"], to=onnx_type(spec.io_dtype)),
        helper.make_node("IsNaN", ["X"], ["nan"]),
        helper.make_node("Where", ["nan", "X", "y_io"], ["Y"]),
    ]
    return nodes


def _igelu_op(spec: Any, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    k = spec.constants
    attrs = (
        helper.make_attribute("in_scale", float(k.scale)),
        helper.make_attribute("in_bits", int(spec.in_bits)),
        helper.make_attribute("q_b", int(k.q_b)),
        helper.make_attribute("q_c", int(k.q_c)),
        helper.make_attribute("q_1", int(k.q_1)),
        helper.make_attribute("shift_bits", int(k.shift_bits)),
        helper.make_attribute("out_scale", float(k.s_out)),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp("GeluInt", attrs, tuple(igelu_body(spec, opset)), opset, t, t, "int32")


def _register_builtin() -> None:
    from gelu_quant.lut.interp import InterpLutSpec
    from gelu_quant.lut.poly import PolySpec
    from gelu_quant.lut.table import LutSpec

    register_body(LutSpec)(_lut_op)
    register_body(InterpLutSpec)(_interp_op)
    register_body(PolySpec)(_poly_op)
    from gelu_quant.lut.baselines import IGeluSpec, QuickGeluSpec, TanhGeluSpec

    register_body(TanhGeluSpec)(_float_formula_op)
    register_body(QuickGeluSpec)(_float_formula_op)
    register_body(IGeluSpec)(_igelu_op)


_register_builtin()


# -- expanding (inlining) -------------------------------------------------------------------------
def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Inline every ``gelu_quant`` function (for runtimes without model-local functions).

    Other local functions are inlined too (``onnx.inliner`` inlines all of them); the
    ``gelu_quant`` opset import is dropped when no node uses the domain any more.
    """
    import onnx.inliner

    out = onnx.inliner.inline_local_functions(model)
    used = _domains_used(out.graph)
    keep = [o for o in out.opset_import if o.domain != DOMAIN or DOMAIN in used]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def _domains_used(graph: onnx.GraphProto) -> set[str]:
    used: set[str] = set()
    for n in graph.node:
        used.add(n.domain)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used |= _domains_used(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    used |= _domains_used(g)
    return used
