"""``GeluPoly``: a piecewise polynomial's op, the exact operation sequence of
:meth:`~gelu_quant.lut.poly.PolySpec.evaluate` in standard ONNX ops.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import FloatSeq, const, tensor_attr
from gelu_quant.graph.ops.custom_op import CustomOp, LutBody, onnx_type, register_body
from gelu_quant.lut.poly import PolySpec

# -- GeluPoly ------------------------------------------------------------------------------------
MAX_POLY_SEGMENTS = 63
"""onnx.reference's GatherElements (numpy ``choose``) takes at most 63 entries."""
LINEAR_SEARCH_SEGMENTS = 16
"""Up to this many segments the body finds a segment by one comparison per breakpoint; beyond,
by a binary search over the breakpoint table (log2 rounds)."""


def poly_body(spec: PolySpec) -> list[onnx.NodeProto]:
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

    seq = FloatSeq(round16, nodes)  # appends to nodes

    def op(op_type: str, a: str, b: str, out: str) -> None:
        seq.op(op_type, a, b, out=out)

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


@register_body(PolySpec)
def _poly_op(spec: PolySpec, *, opset: int, lut_body: LutBody, verify: bool) -> CustomOp:
    attrs = (
        tensor_attr("breakpoints", np.asarray(spec.breakpoints, dtype=spec.io_dtype)),
        tensor_attr("origins", np.asarray(spec.origins, dtype=spec.compute_dtype)),
        tensor_attr("coefficients", spec.coefficients),
        helper.make_attribute("lo", float(spec.lo)),
        helper.make_attribute("hi", float(spec.hi)),
        helper.make_attribute("compute_dtype", spec.compute_dtype),
        helper.make_attribute("form", spec.form),
    )
    t = onnx_type(spec.io_dtype)
    return CustomOp("GeluPoly", attrs, tuple(poly_body(spec)), opset, t, t, "poly")
