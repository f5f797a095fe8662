"""Small read-only helpers over an onnx-ir graph: constants, Q/DQ pairs, consumers, dtypes.

Constants are read only when they are tiny (at most :data:`MAX_CONST_SIZE` elements), so an
external-data model never has its weights pulled into memory by discovery.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

MAX_CONST_SIZE = 16
"""Largest constant (in elements) that discovery reads."""

STD_DOMAINS = ("", "ai.onnx")
MS_DOMAIN = "com.microsoft"

_DTYPE_NAMES = {
    ir.DataType.FLOAT: "float32",
    ir.DataType.FLOAT16: "float16",
    ir.DataType.BFLOAT16: "bfloat16",
    ir.DataType.DOUBLE: "float64",
    ir.DataType.INT8: "int8",
    ir.DataType.UINT8: "uint8",
    ir.DataType.INT16: "int16",
    ir.DataType.UINT16: "uint16",
    ir.DataType.INT32: "int32",
    ir.DataType.INT4: "int4",
    ir.DataType.UINT4: "uint4",
}


def dtype_name(dt: ir.DataType | None) -> str | None:
    """``float32``-style name of an ONNX element type, None when unknown."""
    if dt is None:
        return None
    return _DTYPE_NAMES.get(dt, dt.name.lower())


def is_op(node: ir.Node | None, op_type: str, domain: str = "") -> bool:
    """True when ``node`` is ``op_type`` of ``domain`` ("" also accepts "ai.onnx")."""
    if node is None or node.op_type != op_type:
        return False
    if domain == "":
        return node.domain in STD_DOMAINS
    return node.domain == domain


def consumers(v: ir.Value) -> list[ir.Node]:
    """Distinct nodes that read ``v`` (including nodes of subgraphs that capture it)."""
    return list(v.consumers())


def _constant_node_value(node: ir.Node) -> np.ndarray | None:
    for key, attr in node.attributes.items():
        if attr.is_ref():
            return None
        if key == "value":
            t = attr.as_tensor()
            return None if t.size > MAX_CONST_SIZE else np.asarray(t.numpy())
        if key == "value_float":
            return np.asarray(attr.as_float(), dtype=np.float32)
        if key == "value_floats":
            return np.asarray(attr.as_floats(), dtype=np.float32)
        if key == "value_int":
            return np.asarray(attr.as_int(), dtype=np.int64)
        if key == "value_ints":
            return np.asarray(attr.as_ints(), dtype=np.int64)
    return None


_CONST_KEY = "gelu_quant.const"


def const_array(v: ir.Value | None, nodes: list[ir.Node] | None = None) -> np.ndarray | None:
    """The value of ``v`` when it is a small constant, else None.

    Understands initializers, ``Constant`` nodes, ``DequantizeLinear`` of constants (ORT's
    quantizer wraps GELU constants that way), ``Cast`` and ``Identity`` of constants. The
    nodes that compute the constant are appended to ``nodes`` when given. Results are cached in
    the value's ``meta`` (shared constants are read once).
    """
    if v is None:
        return None
    cached = v.meta.get(_CONST_KEY)
    if cached is None:
        found: list[ir.Node] = []
        try:
            value = _const_array(v, found)
        except (TypeError, ValueError, OverflowError, KeyError, AssertionError):
            # malformed (onnx-ir asserts on e.g. float_data of an int8 tensor): not a constant
            value, found = None, []
        cached = (value, tuple(found))
        v.meta[_CONST_KEY] = cached
    value, producers = cached
    if value is not None and nodes is not None:
        nodes.extend(producers)
    return value


def _const_array(v: ir.Value, nodes: list[ir.Node]) -> np.ndarray | None:
    tensor = v.const_value
    if tensor is not None:
        if v.is_graph_input():  # an overridable initializer is not a constant
            return None
        if tensor.size > MAX_CONST_SIZE:
            return None
        try:
            return np.asarray(tensor.numpy())
        except (OSError, ValueError, TypeError, AssertionError):  # unreadable or malformed data
            return None
    node = v.producer()
    if node is None or node.domain not in STD_DOMAINS:
        return None
    found: list[ir.Node] = []
    value: np.ndarray | None = None
    if node.op_type == "Constant":
        value = _constant_node_value(node)
    elif node.op_type in ("Identity", "Cast") and node.inputs:
        inner = const_array(node.inputs[0], found)
        if inner is not None and node.op_type == "Cast":
            to = node.attributes.get("to")
            if to is None:
                return None
            value = inner.astype(ir.DataType(to.as_int()).numpy())
        else:
            value = inner
    elif node.op_type == "DequantizeLinear":
        value = _dequantize_const(node, found)
    if value is None:
        return None
    nodes.extend(found)
    nodes.append(node)
    return value


def _dequantize_const(node: ir.Node, found: list[ir.Node]) -> np.ndarray | None:
    ins = list(node.inputs) + [None] * 3
    q = const_array(ins[0], found)
    scale = const_array(ins[1], found)
    if q is None or scale is None or scale.size != 1:
        return None
    zp = const_array(ins[2], found) if ins[2] is not None else None
    zero = 0.0 if zp is None else float(zp.reshape(-1)[0])
    with np.errstate(all="ignore"):  # a hostile scale may overflow: the value is then inf
        out: np.ndarray = (q.astype(np.float64) - zero) * float(scale.reshape(-1)[0])
        return out.astype(scale.dtype)


def scalar_info(v: ir.Value | None) -> tuple[float, int] | None:
    """(value, element count) of a per-tensor Q/DQ parameter; None if absent or not constant."""
    arr = const_array(v)
    if arr is None:
        return None
    return float(arr.reshape(-1)[0]), int(arr.size)


def pair_back(v: ir.Value) -> tuple[ir.Value, ir.Node, ir.Node] | None:
    """If ``v`` is the output of a QuantizeLinear → DequantizeLinear pair, (float input, Q, DQ).

    The Q's output must feed only that DQ: a pair inside a decomposed GELU, as ORT's quantizer
    writes them around intermediate results.
    """
    dq = v.producer()
    if not is_op(dq, "DequantizeLinear") or dq is None or not dq.inputs:
        return None
    qv = dq.inputs[0]
    if qv is None:
        return None
    q = qv.producer()
    if not is_op(q, "QuantizeLinear") or q is None or q.inputs[0] is None:
        return None
    if qv.is_graph_output() or len(consumers(qv)) != 1:
        return None
    return q.inputs[0], q, dq


def pair_forward(v: ir.Value) -> tuple[ir.Value, ir.Node, ir.Node] | None:
    """If ``v`` feeds only a QuantizeLinear whose output feeds only a DequantizeLinear:
    (DQ output, Q, DQ)."""
    users = consumers(v)
    if len(users) != 1 or not is_op(users[0], "QuantizeLinear"):
        return None
    q = users[0]
    qv = q.outputs[0]
    q_users = consumers(qv)
    if qv.is_graph_output() or len(q_users) != 1 or not is_op(q_users[0], "DequantizeLinear"):
        return None
    dq = q_users[0]
    return dq.outputs[0], q, dq


def dq_twins(a: ir.Value, b: ir.Value) -> bool:
    """True when ``a`` and ``b`` come from two DequantizeLinear nodes of the same int8 tensor
    with the same scale, zero point and attributes (quantizers that give each reader its own
    DQ write these)."""
    pa, pb = a.producer(), b.producer()
    if pa is None or pb is None or pa is pb:
        return False
    if not (is_op(pa, "DequantizeLinear") and is_op(pb, "DequantizeLinear")):
        return False
    if list(pa.inputs) != list(pb.inputs):
        return False
    attrs_a = {k: v.value for k, v in pa.attributes.items()}
    attrs_b = {k: v.value for k, v in pb.attributes.items()}
    return attrs_a == attrs_b


def shape_of(v: ir.Value) -> tuple[int | str | None, ...] | None:
    """The static/symbolic shape of ``v`` when known."""
    if v.shape is None:
        return None
    dims: list[int | str | None] = []
    for d in v.shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            name = getattr(d, "value", None)
            # "unk__N": a placeholder made up by shape inference, not a name the model chose
            dims.append(None if name is None or name.startswith("unk__") else name)
    return tuple(dims)


def float32_initializer(v: ir.Value | None) -> np.ndarray:
    """The float32 array of a constant value (a weight or bias to rewrite); ValueError saying
    why not otherwise."""
    t = None if v is None else v.const_value
    name = v.name if v is not None else "?"
    if t is None:
        raise ValueError(f"{name} is not a constant")
    a = np.asarray(t.numpy())
    if a.dtype != np.float32:
        raise ValueError(f"{name} is {a.dtype}, not float32")
    return a


def drop_if_unused(graph: ir.Graph, v: ir.Value) -> None:
    """Remove initializer ``v`` when no node reads it any more and it is no graph input."""
    if v.is_initializer() and not list(v.uses()) and not v.is_graph_input():
        graph.initializers.pop(v.name or "", None)


def add_initializer(
    graph: ir.Graph, taken: set[str], base: str, suffix: str, a: np.ndarray
) -> ir.Value:
    """Register ``a`` as a new initializer named ``<base>_<suffix>`` (``_1``, ``_2``, … when
    taken); the name joins ``taken``."""
    name, k = f"{base}_{suffix}", 1
    while name in taken:
        name = f"{base}_{suffix}_{k}"
        k += 1
    taken.add(name)
    v = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(a), name=name))
    graph.register_initializer(v)
    return v
