"""The ``gelu_quant`` domain's node types: :class:`CustomOp` (a spec turned into attributes and a
standard-ONNX body) and the registry that maps each spec class to the builder of its op.

Each op kind lives in its own module (``lut_op``, ``grouped_lut_op``, ``interp_lut_op``,
``poly_op``, ``float_formula_op``, ``igelu_op``) and registers its builder with
:func:`register_body` next to its definition; :func:`custom_op` dispatches on the spec's type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.lut.spec import GeluApprox

DOMAIN = "gelu_quant"
DOMAIN_VERSION = 1
MIN_OPSET = 13
"""Oldest default-domain opset a body can be written in."""

LutBody = Literal["auto", "formula", "gather", "gather-elements"]
LUT_BODIES: tuple[LutBody, ...] = ("auto", "formula", "gather", "gather-elements")
"""``auto``: the formula body when it is proved equal to the table, else ``gather-elements``
(``GatherElements`` on the flattened tensor: any table, as fast as DQ->Gelu->Q in ORT; run it in
onnx.reference with :func:`reference_ops`); ``gather``: ``Cast -> Gather`` (slow in ORT)."""


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
    equal to the table, else ``gather-elements``; grouped tables: ``gather-elements``, faster in
    ORT than their per-channel formula); ``verify`` runs formula bodies on every input
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
