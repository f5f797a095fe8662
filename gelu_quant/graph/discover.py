"""Find every GELU in an ONNX model, however it was written.

Spellings found (see :class:`~gelu_quant.graph.sites.GeluSite` ``spelling``):

* single ops — ONNX ``Gelu`` (opset 20+, ``approximate`` none or tanh), ``com.microsoft``
  ``Gelu``, ``FastGelu`` (with or without bias), ``BiasGelu`` and ``QuickGelu``;
* decomposed patterns around ``Erf``, ``Tanh`` and ``Sigmoid`` (see
  :mod:`gelu_quant.graph.patterns`): ``pattern:erf``, ``pattern:tanh``, ``pattern:quick`` and
  ``pattern:tanh-sigmoid`` (the tanh form as ``x·σ(2√(2/π)(x + 0.044715x³))``), including the
  Q/DQ pairs ORT's quantizer puts inside them and per-reader (dedicated) DQs of the input;
* each of them between a ``DequantizeLinear`` and a ``QuantizeLinear`` (reported as the site's
  ``qdq_in`` / ``qdq_out``, not as part of its ``nodes``);
* inside If/Loop/Scan bodies (``graph`` is the subgraph path ``<node>/<attr>``).

Node identity: ``GeluSite.nodes`` are node names of :func:`gelu_quant.graph.names.ensure_node_names`
applied to the model — the model's own names whenever every node already has a unique name (the
common case; all exporters name nodes). A converter that loads the model must call
``ensure_node_names`` too before looking the nodes up.

Models given by path are read without their external data; only constants of at most
:data:`~gelu_quant.graph.irview.MAX_CONST_SIZE` elements are ever read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
import onnx_ir as ir

from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.graph.irview import (
    MS_DOMAIN,
    STD_DOMAINS,
    const_array,
    consumers,
    dtype_name,
    is_op,
    shape_of,
)
from gelu_quant.graph.names import name_nodes_in_place, needs_names
from gelu_quant.graph.patterns import FORMULAS, QUICK_ALPHA, PatternMatch, match_anchor
from gelu_quant.graph.sites import AxisQuantInfo, GeluSite, QuantInfo
from gelu_quant.modelfile import model_dir, read_model
from gelu_quant.numerics import GeluForm

ModelLike = Union[onnx.ModelProto, str, "os.PathLike[str]"]

_SHAPE_INFERENCE_MAX_BYTES = 1 << 30
_STUB_ABOVE_ELEMENTS = 1024


@dataclass(frozen=True)
class NearMiss:
    """Something that looked like a GELU but was not accepted, and why."""

    graph: str
    """"" for the main graph, else the subgraph path."""
    node: str
    """The node the attempt started from (the Erf/Tanh/Sigmoid anchor or the fused op)."""
    spelling: str
    """The spelling that was attempted, e.g. ``pattern:erf``."""
    reason: str
    nodes: tuple[str, ...] = ()
    """Nodes that had been matched when the attempt was refused."""

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "node": self.node,
            "spelling": self.spelling,
            "reason": self.reason,
            "nodes": list(self.nodes),
        }


@dataclass(frozen=True)
class Discovery:
    """Everything one discovery pass found."""

    sites: list[GeluSite]
    near_misses: list[NearMiss]
    renamed_nodes: int = 0
    """How many nodes had no (unique) name and were named by ``ensure_node_names``."""
    notes: tuple[str, ...] = field(default_factory=tuple)


def find_gelu_sites(model: ModelLike, *, include_subgraphs: bool = True) -> list[GeluSite]:
    """All GELU sites of ``model`` (a ModelProto or a path), main graph first, in graph order.

    Ids are ``gelu0``, ``gelu1``… in the main graph and ``<node>/<attr>/gelu0``… in subgraphs.
    Raises BadInputError for a missing path and ModelError for a file that is not ONNX.
    """
    return discover(model, include_subgraphs=include_subgraphs).sites


def explain(model: ModelLike, *, include_subgraphs: bool = True) -> list[NearMiss]:
    """Patterns that almost formed a GELU, with the reason each was refused."""
    return discover(model, include_subgraphs=include_subgraphs).near_misses


def discover(
    model: ModelLike, *, include_subgraphs: bool = True, infer_shapes: bool = True
) -> Discovery:
    """Sites and near misses in one pass (what ``gelu-quant inspect`` shows)."""
    proto, base_dir, owned = load_model_proto(model)
    renamed = 0
    if needs_names(proto):
        if not owned:
            copy = onnx.ModelProto()
            copy.CopyFrom(proto)
            proto = copy
        renamed = name_nodes_in_place(proto)
    inferred = _inferred_types(proto) if infer_shapes else {}
    try:
        irmodel = ir.serde.deserialize_model(proto)
    except Exception as err:  # onnx-ir rejects malformed graphs with assorted errors
        detail = " ".join(str(err).split())
        raise ModelError(f"cannot read the model's graph: {detail}") from err
    if base_dir:
        ir.external_data.set_base_dir(irmodel.graph, base_dir)

    sites: list[GeluSite] = []
    misses: list[NearMiss] = []
    for graph, path in _graphs(irmodel.graph, "", include_subgraphs):
        _apply_inferred(graph, inferred)
        s, m = _discover_graph(graph, path, inferred)
        sites += s
        misses += m
    notes = [f"{renamed} unnamed or duplicate-named nodes were named"] if renamed else []
    for fn in proto.functions:
        ops = sorted({n.op_type for n in fn.node} & _GELU_LIKE_OPS)
        if ops:
            notes.append(
                f"model-local function {fn.domain}:{fn.name} uses {', '.join(ops)}: "
                "GELUs inside functions are not reported (inline the functions first)"
            )
    return Discovery(sites, misses, renamed, tuple(notes))


_GELU_LIKE_OPS = frozenset({"Gelu", "Erf", "Tanh", "FastGelu", "BiasGelu", "QuickGelu"})


def load_model_proto(model: ModelLike) -> tuple[onnx.ModelProto, str, bool]:
    """(proto without external data, base directory for external data, proto is a private copy)."""
    if isinstance(model, onnx.ModelProto):
        return model, "", False
    if not isinstance(model, (str, os.PathLike)):
        raise BadInputError(f"expected an ONNX model or a path, got {type(model).__name__}")
    path = Path(model)
    return read_model(path), str(model_dir(path)), True


# -- graphs ---------------------------------------------------------------------------------------


def _graphs(graph: ir.Graph, path: str, recurse: bool) -> Iterator[tuple[ir.Graph, str]]:
    yield graph, path
    if not recurse:
        return
    for node in graph:
        for attr_name, attr in node.attributes.items():
            if attr.is_ref():
                continue
            prefix = f"{path}/" if path else ""
            if attr.type == ir.AttributeType.GRAPH:
                yield from _graphs(attr.as_graph(), f"{prefix}{node.name}/{attr_name}", True)
            elif attr.type == ir.AttributeType.GRAPHS:
                for i, g in enumerate(attr.as_graphs()):
                    yield from _graphs(g, f"{prefix}{node.name}/{attr_name}[{i}]", True)


@dataclass
class _Found:
    position: int
    form: GeluForm
    spelling: str
    x: ir.Value
    output: ir.Value
    nodes: list[ir.Node]
    bias: ir.Value | None = None
    alpha: float | None = None


_Inferred = dict[str, tuple[str | None, tuple[int | str | None, ...] | None]]


def _apply_inferred(graph: ir.Graph, inferred: _Inferred) -> None:
    """Give node outputs without a recorded dtype/shape what shape inference found."""
    for node in graph:
        for v in node.outputs:
            known = inferred.get(str(v.name))
            if known is None:
                continue
            if v.type is None and known[0] is not None:
                dt = _DTYPES_BY_NAME.get(known[0])
                if dt is not None:
                    v.dtype = dt
            if v.shape is None and known[1] is not None:
                v.shape = ir.Shape(list(known[1]))


_DTYPES_BY_NAME = {dtype_name(dt): dt for dt in ir.DataType}


# what onnx-ir raises on attributes of the wrong type or unreadable constants: a node that is
# malformed this way is reported as a near miss, not a crash
_MALFORMED = (TypeError, ValueError, OverflowError, KeyError, IndexError, AssertionError)


def _discover_graph(
    graph: ir.Graph, path: str, inferred: _Inferred
) -> tuple[list[GeluSite], list[NearMiss]]:
    order = {n: i for i, n in enumerate(graph)}
    found: list[_Found] = []
    misses: list[NearMiss] = []
    claimed: set[ir.Node] = set()
    for node in graph:
        if node in claimed:
            continue
        try:
            fused = _fused(node, order, misses, path)
        except _MALFORMED as err:  # an attribute of the wrong type, a bad constant, …
            misses.append(NearMiss(path, str(node.name), node.op_type, f"malformed node: {err}"))
            continue
        if fused is not None:
            found.append(fused)
            claimed.add(node)
            continue
        if node.domain in STD_DOMAINS and node.op_type in FORMULAS:
            try:
                result = match_anchor(node, order)
            except _MALFORMED as err:
                misses.append(
                    NearMiss(path, str(node.name), node.op_type, f"malformed graph: {err}")
                )
                continue
            if result is None:
                continue
            if isinstance(result, PatternMatch):
                overlap = claimed.intersection(result.nodes)
                if not overlap:
                    claimed.update(result.nodes)
                    found.append(
                        _Found(
                            position=order[result.output.producer()],  # type: ignore[index]
                            form=result.formula.form,  # type: ignore[arg-type]
                            spelling=result.formula.spelling,
                            x=result.x,
                            output=result.output,
                            nodes=result.nodes,
                            alpha=result.alpha,
                        )
                    )
                    continue
                reason = "shares nodes with another site: " + ", ".join(
                    sorted(str(n.name) for n in overlap)
                )
                misses.append(NearMiss(path, str(node.name), result.formula.spelling, reason))
            else:
                misses.append(
                    NearMiss(
                        graph=path,
                        node=str(result.anchor.name),
                        spelling=result.formula.spelling,
                        reason=result.reason,
                        nodes=tuple(str(n.name) for n in result.nodes),
                    )
                )
    found.sort(key=lambda f: f.position)
    prefix = f"{path}/" if path else ""
    sites = [_to_site(f"{prefix}gelu{i}", f, path, inferred) for i, f in enumerate(found)]
    return sites, misses


def _fused(
    node: ir.Node, order: dict[ir.Node, int], misses: list[NearMiss], path: str
) -> _Found | None:
    """A single-node GELU (ONNX or com.microsoft), else None."""
    ins = list(node.inputs)
    if not ins or ins[0] is None:
        return None
    x = ins[0]
    second = ins[1] if len(ins) > 1 else None

    def found(form: GeluForm, spelling: str, **kw: Any) -> _Found:
        return _Found(order[node], form, spelling, x, node.outputs[0], [node], **kw)

    if is_op(node, "Gelu"):
        attr = node.attributes.get("approximate")
        approx = "none" if attr is None or attr.is_ref() else attr.as_string()
        if approx == "none":
            return found("exact", "onnx:Gelu")
        if approx == "tanh":
            return found("tanh", "onnx:Gelu")
        misses.append(
            NearMiss(path, str(node.name), "onnx:Gelu", f"unknown approximate={approx!r}")
        )
        return None
    if node.domain != MS_DOMAIN:
        return None
    if node.op_type == "Gelu":
        return found("exact", "com.microsoft:Gelu")
    if node.op_type == "FastGelu":
        return found("tanh", "com.microsoft:FastGelu", bias=second)
    if node.op_type == "BiasGelu":
        if second is None:
            misses.append(NearMiss(path, str(node.name), "com.microsoft:BiasGelu", "no bias input"))
            return None
        return found("exact", "com.microsoft:BiasGelu", bias=second)
    if node.op_type == "QuickGelu":
        attr = node.attributes.get("alpha")
        alpha = QUICK_ALPHA if attr is None or attr.is_ref() else attr.as_float()
        return found("quick", "com.microsoft:QuickGelu", alpha=alpha)
    return None


# -- site assembly --------------------------------------------------------------------------------


def _to_site(site_id: str, f: _Found, path: str, inferred: _Inferred) -> GeluSite:
    notes: list[str] = []
    members = set(f.nodes)
    known = inferred.get(str(f.x.name), (None, None))
    dtype = dtype_name(f.x.dtype) or known[0] or dtype_name(f.output.dtype)
    if dtype is None:
        dtype = inferred.get(str(f.output.name), (None, None))[0]
    if dtype is None and f.bias is not None:
        dtype = dtype_name(f.bias.dtype)
    dq = f.x.producer()
    if dtype is None and dq is not None and is_op(dq, "DequantizeLinear") and len(dq.inputs) > 1:
        scale = const_array(dq.inputs[1])  # DequantizeLinear gives the scale's float type
        dtype = None if scale is None else scale.dtype.name
    if dtype is None:
        dtype = "float32"
        notes.append("input dtype unknown; assumed float32")
    shape = shape_of(f.x) or known[1]
    in_axis, out_axis = _qdq_axis(f.x, f.output, members, notes, inferred)
    qdq_in = None if in_axis is not None else _qdq_in(f.x, members, notes, inferred)
    qdq_out = None if out_axis is not None else _qdq_out(f.output, notes, inferred)
    return GeluSite(
        id=site_id,
        form=f.form,
        spelling=f.spelling,
        input=str(f.x.name),
        output=str(f.output.name),
        nodes=tuple(str(n.name) for n in f.nodes),
        dtype=dtype,
        bias=None if f.bias is None else str(f.bias.name),
        shape=shape,
        qdq_in=qdq_in,
        qdq_out=qdq_out,
        qdq_in_axis=in_axis,
        qdq_out_axis=out_axis,
        graph=path,
        alpha=f.alpha,
        notes=tuple(notes),
    )


def _quant_info(
    node: ir.Node,
    tensor: ir.Value,
    inferred: _Inferred,
    notes: list[str],
) -> QuantInfo | None:
    """Scale, zero point and integer type of a per-tensor Q or DQ node (None, with a note, if
    they are not constants or not per-tensor). A Q without zero point and output_dtype gives
    uint8, as ONNX says."""
    ins = [*node.inputs, None, None, None]
    scale = const_array(ins[1])
    if scale is None or scale.size != 1:
        notes.append(f"{node.op_type} {node.name!r} has a non-constant or per-channel scale")
        return None
    zp = const_array(ins[2]) if ins[2] is not None else None
    if ins[2] is not None and (zp is None or zp.size != 1):
        notes.append(f"{node.op_type} {node.name!r} has a non-constant or per-channel zero point")
        return None
    dtype = _code_dtype(node, tensor, zp, inferred)
    if dtype is None:
        notes.append(f"{node.op_type} {node.name!r}: integer dtype unknown")
        return None
    return QuantInfo(
        tensor=str(tensor.name),
        scale=float(scale.reshape(-1)[0]),
        zero_point=0 if zp is None else int(zp.reshape(-1)[0]),
        dtype=dtype,
        node=str(node.name),
    )


def _code_dtype(
    node: ir.Node, tensor: ir.Value, zp: np.ndarray | None, inferred: _Inferred
) -> str | None:
    """The integer type of a Q/DQ's codes: the zero point's, the tensor's, else a Q's
    ``output_dtype`` (uint8 without one, as ONNX says)."""
    dtype = (
        (zp.dtype.name if zp is not None else None)
        or dtype_name(tensor.dtype)
        or inferred.get(str(tensor.name), (None, None))[0]
    )
    q = node if node.op_type == "QuantizeLinear" else tensor.producer()
    if dtype is None and q is not None and is_op(q, "QuantizeLinear"):
        attr = q.attributes.get("output_dtype")
        dtype = dtype_name(ir.DataType(attr.as_int())) if attr is not None else "uint8"
    return dtype


MAX_AXIS_CHANNELS = 1 << 16
"""Largest per-axis scale / zero-point vector (elements) discovery reads."""


def _axis_vector(v: ir.Value | None) -> np.ndarray | None:
    """A 1-D per-axis scale or zero point held in the model itself (initializer or ``Constant``
    node; not external data), at most :data:`MAX_AXIS_CHANNELS` elements; else None."""
    if v is None or v.is_graph_input():
        return None
    tensor = v.const_value
    producer = v.producer()
    if tensor is None and is_op(producer, "Constant"):
        attr = producer.attributes.get("value")  # type: ignore[union-attr]
        tensor = None if attr is None or attr.is_ref() else attr.as_tensor()
    if tensor is None or isinstance(tensor, ir.ExternalTensor):
        return None
    if len(tensor.shape) != 1 or not 1 <= tensor.size <= MAX_AXIS_CHANNELS:
        return None
    try:
        return np.asarray(tensor.numpy())
    except (OSError, ValueError, TypeError, AssertionError):  # unreadable or malformed data
        return None


def _axis_quant_info(
    node: ir.Node, tensor: ir.Value, rank_of: ir.Value, inferred: _Inferred
) -> AxisQuantInfo | str | None:
    """A per-axis Q or DQ (constant 1-D scale of more than one element): its record, or why it
    cannot be read (str); None when the node is not per-axis."""
    ins = [*node.inputs, None, None, None]
    if ins[1] is None:
        return None
    known = ins[1].shape
    if known is not None and (len(known) != 1 or known[0] == 1):
        return None  # per-tensor
    scale = _axis_vector(ins[1])
    if scale is None and known is None:
        return None  # nothing known: left to the per-tensor reading
    if scale is None:
        return f"{node.op_type} {node.name!r}: per-axis scale is not a constant in the model"
    if scale.size == 1:
        return None
    zp = _axis_vector(ins[2]) if ins[2] is not None else None
    if ins[2] is not None and (zp is None or zp.shape != scale.shape):
        return f"{node.op_type} {node.name!r}: per-axis zero point is not a constant vector"
    block = node.attributes.get("block_size")
    if block is not None and (block.is_ref() or block.as_int() != 0):
        return f"{node.op_type} {node.name!r}: blocked quantization, not per-axis"
    attr = node.attributes.get("axis")
    axis = 1 if attr is None or attr.is_ref() else attr.as_int()
    dtype = _code_dtype(node, tensor, zp, inferred)
    if dtype is None:
        return f"{node.op_type} {node.name!r}: integer dtype unknown"
    shape = shape_of(rank_of) or inferred.get(str(rank_of.name), (None, None))[1]
    return AxisQuantInfo(
        tensor=str(tensor.name),
        node=str(node.name),
        axis=axis,
        rank=None if shape is None else len(shape),
        scales=tuple(float(v) for v in scale.astype(np.float32)),
        zero_points=tuple(int(v) for v in (np.zeros(scale.size) if zp is None else zp)),
        dtype=dtype,
    )


def _qdq_axis(
    x: ir.Value, y: ir.Value, members: set[ir.Node], notes: list[str], inferred: _Inferred
) -> tuple[AxisQuantInfo | None, AxisQuantInfo | None]:
    """A per-axis DequantizeLinear before the site and a per-axis QuantizeLinear after it (both,
    or neither: a site with one per-axis side is left to the per-tensor reading, which notes
    it)."""
    dq = x.producer()
    users = consumers(y)
    if dq is None or not is_op(dq, "DequantizeLinear") or dq.inputs[0] is None:
        return None, None
    if len(users) != 1 or y.is_graph_output() or not is_op(users[0], "QuantizeLinear"):
        return None, None
    q = users[0]
    why: list[str] = []
    found = []
    for node, tensor, rank_of in ((dq, dq.inputs[0], x), (q, q.outputs[0], y)):
        info = _axis_quant_info(node, tensor, rank_of, inferred)
        if isinstance(info, str):
            why.append(info)
        found.append(info)
    qin, qout = found
    if why:
        notes.extend(why)
        return None, None
    if not isinstance(qin, AxisQuantInfo) or not isinstance(qout, AxisQuantInfo):
        return None, None
    in_bits = _clip_bits(dq.inputs[0].producer(), qin.dtype)
    after = consumers(q.outputs[0])
    out_bits = None
    if len(after) == 1 and not q.outputs[0].is_graph_output():
        out_bits = _clip_bits(after[0], qout.dtype)
    outside = [u for u in consumers(x) if u not in members]
    if outside or x.is_graph_output():
        names = ", ".join(repr(u.name) for u in outside) or "the graph output"
        notes.append(f"input {x.name!r} of DequantizeLinear {dq.name!r} is also read by {names}")
    return (
        dataclasses.replace(qin, bits=in_bits),
        dataclasses.replace(qout, bits=out_bits),
    )


def _clip_bits(clip: ir.Node | None, dtype: str) -> int | None:
    """The code width ``b < 8`` when ``clip`` is a ``Clip`` to exactly the ``b``-bit code range of
    ``dtype`` (int8/uint8) with constant bounds, else None."""
    from gelu_quant.qparams import qlimits

    if clip is None or not is_op(clip, "Clip") or dtype not in ("int8", "uint8"):
        return None
    ins = [*clip.inputs, None, None]
    lo, hi = const_array(ins[1]), const_array(ins[2])
    if lo is None or hi is None or lo.size != 1 or hi.size != 1:
        return None
    for b in range(2, 8):
        if (int(lo.reshape(-1)[0]), int(hi.reshape(-1)[0])) == qlimits(dtype, b):
            return b
    return None


def _qdq_in(
    x: ir.Value, members: set[ir.Node], notes: list[str], inferred: _Inferred
) -> QuantInfo | None:
    dq = x.producer()
    if dq is None or not is_op(dq, "DequantizeLinear") or dq.inputs[0] is None:
        return None
    info = _quant_info(dq, dq.inputs[0], inferred, notes)
    if info is not None:
        bits = _clip_bits(dq.inputs[0].producer(), info.dtype)
        if bits is not None:
            info = dataclasses.replace(info, bits=bits)
    outside = [u for u in consumers(x) if u not in members]
    if info is not None and (outside or x.is_graph_output()):
        names = ", ".join(repr(u.name) for u in outside) or "the graph output"
        notes.append(f"input {x.name!r} of DequantizeLinear {dq.name!r} is also read by {names}")
    return info


def _qdq_out(y: ir.Value, notes: list[str], inferred: _Inferred) -> QuantInfo | None:
    users = consumers(y)
    qs = [u for u in users if is_op(u, "QuantizeLinear")]
    if not qs:
        return None
    if len(users) != 1 or y.is_graph_output():
        notes.append(
            f"output {y.name!r} feeds QuantizeLinear and other consumers: no single output Q"
        )
        return None
    q = qs[0]
    info = _quant_info(q, q.outputs[0], inferred, notes)
    after = consumers(q.outputs[0])
    if info is not None and len(after) == 1 and not q.outputs[0].is_graph_output():
        bits = _clip_bits(after[0], info.dtype)
        if bits is not None:
            info = dataclasses.replace(info, bits=bits)
    return info


# -- shape inference ------------------------------------------------------------------------------


def _inferred_types(proto: onnx.ModelProto) -> _Inferred:
    """Element type and shape of every value ONNX shape inference can tell; {} if it fails.

    Runs on a skeleton copy whose large initializers are replaced by external-data stubs, so it
    costs little even for big models and never reads weights.
    """
    skel = onnx.ModelProto()
    skel.ir_version = proto.ir_version
    skel.opset_import.extend(proto.opset_import)
    skel.functions.extend(proto.functions)
    g, sg = proto.graph, skel.graph
    sg.name = g.name
    sg.node.extend(g.node)
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    for t in g.initializer:
        numel = 1
        for d in t.dims:
            numel *= d
        if t.data_location == onnx.TensorProto.EXTERNAL or numel > _STUB_ABOVE_ELEMENTS:
            stub = sg.initializer.add()
            stub.name = t.name
            stub.data_type = t.data_type
            stub.dims.extend(t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            entry = stub.external_data.add()
            entry.key, entry.value = "location", "__gelu_quant_stub__"
        else:
            sg.initializer.append(t)
    if skel.ByteSize() > _SHAPE_INFERENCE_MAX_BYTES:
        return {}
    try:
        done = onnx.shape_inference.infer_shapes(skel, strict_mode=False)
    except Exception:  # shape inference is a best-effort extra: never fail discovery for it
        return {}
    out: _Inferred = {}
    for vi in _all_value_infos(done.graph):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dt = dtype_name(ir.DataType(tt.elem_type)) if tt.elem_type else None
        shape: tuple[int | str | None, ...] | None = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value
                if d.HasField("dim_value")
                else (_dim_param(d.dim_param) if d.HasField("dim_param") else None)
                for d in tt.shape.dim
            )
        out[vi.name] = (dt, shape)
    return out


def _dim_param(name: str) -> str | None:
    """A symbolic dim's name; None for the ``unk__N`` names shape inference makes up."""
    return None if name.startswith("unk__") else name


def _all_value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_value_infos(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_value_infos(sub)
