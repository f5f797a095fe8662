"""Fold grouped tables' per-channel scales into the neighbouring linear layers (``--fold-scales``).

A grouped float site is ``x → Div(s_in) → Round → Add(z_in) → QuantizeLinear(1, 0) →
GeluGroupedLut → Cast → Sub(z_out) → Mul(s_out) → y`` with per-channel ``s``/``z`` (channel =
last axis). An int8 pipeline cannot run per-channel float scales on the activation; it can run
them in the weights:

* **input side** — when ``x = h·W (+ b)`` with constant ``W`` (and ``b``), the producer computes
  the codes' real value directly: ``W' = W / s_in`` (per column), ``b' = b / s_in + z_in``; the
  ``Div``, the ``Round`` and the zero-point ``Add`` go (without a bias only the ``Div``). The
  quantize becomes one per-tensor ``QuantizeLinear`` with scale 1 and zero point 0: the
  producer's own per-channel output requantization.
* **output side** — when ``y`` is read only by ``MatMul(y, V) (+ c)`` with constant ``V`` (and
  ``c``): ``V' = diag(s_out)·V`` (per row), ``c' = c − (z_out·s_out)·V``; the ``Mul`` and the
  zero-point ``Sub`` go (without a bias only the ``Mul``): the next layer reads the output codes.

Both are exact in real arithmetic; in float32 the sums round differently, which can move a value
that lies on a rounding boundary to the neighbouring code (the test measures how often). What the
new weights do to an int8 weight quantization of each layer (per-tensor and per output channel,
symmetric) is reported next to the folding in the manifest. A side that does not match (a weight
that is not a constant, a tensor with other readers) stays as it was, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx_ir as ir

from gelu_quant.graph.irview import add_initializer, drop_if_unused, float32_initializer
from gelu_quant.graph.manifest import SiteRecord

_OP = "GeluGroupedLut"  # op types carry a hash of the spec's attributes: GeluGroupedLut_<hash>


class _NoFold(Exception):
    pass


def _producer(v: ir.Value | None, op: str) -> ir.Node:
    n = None if v is None else v.producer()
    if n is None or n.op_type != op or n.domain not in ("", "ai.onnx"):
        raise _NoFold(f"expected {op} before {v.name if v is not None else '?'}")
    return n


def _only_reader(v: ir.Value) -> ir.Node:
    uses = list(v.uses())
    if v.is_graph_output() or len(uses) != 1:
        raise _NoFold(f"{v.name} has other readers")
    return uses[0][0]


def _const(v: ir.Value | None) -> npt.NDArray[np.float32]:
    try:
        return float32_initializer(v)
    except ValueError as e:
        raise _NoFold(str(e)) from None


def int8_weight_error(w: npt.NDArray[Any], axis: int) -> dict[str, float]:
    """Relative Frobenius error of symmetric int8 weight quantization, per tensor and per output
    channel (``axis``: the output-channel axis)."""
    w = np.asarray(w, np.float64)
    norm = float(np.linalg.norm(w)) or 1.0

    def err(scale: npt.NDArray[np.float64]) -> float:
        scale = np.where(scale > 0, scale, 1.0)
        q = np.clip(np.round(w / scale), -127, 127) * scale
        return float(np.linalg.norm(q - w)) / norm

    per_ch = np.max(np.abs(w), axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    return {
        "per_tensor": err(np.array(np.max(np.abs(w)) / 127.0)),
        "per_channel": err(per_ch / 127.0),
    }


@dataclass
class FoldGroupScales(ir.passes.InPlacePass):
    """Fold every grouped float site's scales where its neighbours allow; ``records`` (the
    replacement pass's) get a ``folded`` entry per grouped site."""

    records: list[SiteRecord]
    taken: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__()

    def _init(self, graph: ir.Graph, base: str, a: npt.NDArray[Any]) -> ir.Value:
        return add_initializer(graph, self.taken, base, "gq_folded", a)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        by_name = {n.name: n for n in graph}
        changed = False
        for i, rec in enumerate(self.records):
            if (
                rec.status != "converted"
                or not (rec.op_type or "").startswith(_OP)
                or rec.mode != "float"
            ):
                continue
            lut = next(by_name[n] for n in rec.added_nodes if by_name[n].op_type.startswith(_OP))
            info: dict[str, Any] = {}
            for side, fold in (("input", self._fold_input), ("output", self._fold_output)):
                try:
                    info[side] = fold(graph, lut)
                    changed = True
                except _NoFold as e:
                    info[side] = {"folded": False, "reason": str(e)}
            self.records[i] = replace(rec, folded=info)
        return ir.passes.PassResult(model, changed)

    def _fold_input(self, graph: ir.Graph, lut: ir.Node) -> dict[str, Any]:
        sat = _producer(lut.inputs[0], "QuantizeLinear")  # the saturating cast, scale 1
        add_z = _producer(sat.inputs[0], "Add")
        rnd = _producer(add_z.inputs[0], "Round")
        div = _producer(rnd.inputs[0], "Div")
        x = div.inputs[0]
        assert x is not None
        params = [div.inputs[1], add_z.inputs[1]]
        s, z = _const(params[0]), _const(params[1])
        _only_reader(x)
        bias_node = x.producer()
        mm_out: ir.Value | None = x
        bias_v: ir.Value | None = None
        if bias_node is not None and bias_node.op_type == "Add":
            lhs, rhs = bias_node.inputs
            if rhs is not None and rhs.const_value is not None:
                mm_out, bias_v = lhs, rhs
            elif lhs is not None and lhs.const_value is not None:
                mm_out, bias_v = rhs, lhs
        assert mm_out is not None
        mm = _producer(mm_out, "MatMul")
        if bias_v is not None:
            _only_reader(mm_out)
        w_v = mm.inputs[1]
        w = _const(w_v)
        if w.ndim != 2 or w.shape[1] != s.size:
            raise _NoFold("the producer's weight is not [in, channels]")
        w2 = (w.astype(np.float64) / s.astype(np.float64)).astype(np.float32)
        out: dict[str, Any] = {
            "folded": True,
            "weight": w_v.name if w_v is not None else None,
            "int8_weight_error_before": int8_weight_error(w, axis=1),
            "int8_weight_error_after": int8_weight_error(w2, axis=1),
        }
        mm.replace_input_with(1, self._init(graph, w_v.name or "w", w2))  # type: ignore[union-attr]
        assert w_v is not None
        drop_if_unused(graph, w_v)
        rnd.replace_input_with(0, x)
        graph.remove(div, safe=True)
        if bias_v is not None and bias_node is not None:
            bias = _const(bias_v)
            b2 = (bias.astype(np.float64) / s + z).astype(np.float32)
            idx = list(bias_node.inputs).index(bias_v)
            bias_node.replace_input_with(idx, self._init(graph, bias_v.name or "b", b2))
            drop_if_unused(graph, bias_v)
            # QuantizeLinear(·, 1, 0) rounds half to even itself: Round goes too
            sat.replace_input_with(0, x)
            graph.remove([add_z, rnd], safe=True)
            out["bias"] = bias_v.name
            out["zero_point"] = "in the bias"
        else:
            out["zero_point"] = "kept (no producer bias)"
        for p in params:
            if p is not None:
                drop_if_unused(graph, p)
        return out

    def _fold_output(self, graph: ir.Graph, lut: ir.Node) -> dict[str, Any]:
        cast = _only_reader(lut.outputs[0])
        if cast.op_type != "Cast":
            raise _NoFold("expected Cast after the table")
        sub = _only_reader(cast.outputs[0])
        mul = _only_reader(sub.outputs[0])
        if sub.op_type != "Sub" or mul.op_type != "Mul":
            raise _NoFold("expected Sub -> Mul after the table (float-output tables have none)")
        params = [sub.inputs[1], mul.inputs[1]]
        z, s = _const(params[0]), _const(params[1])
        y = mul.outputs[0]
        mm = _only_reader(y)
        if mm.op_type != "MatMul" or mm.inputs[0] is not y:
            raise _NoFold("the GELU output is not read by one MatMul as its first input")
        v_v = mm.inputs[1]
        v = _const(v_v)
        if v.ndim != 2 or v.shape[0] != s.size:
            raise _NoFold("the consumer's weight is not [channels, out]")
        assert v_v is not None
        v2 = (s.astype(np.float64)[:, None] * v).astype(np.float32)
        out: dict[str, Any] = {
            "folded": True,
            "weight": v_v.name,
            "int8_weight_error_before": int8_weight_error(v, axis=1),
            "int8_weight_error_after": int8_weight_error(v2, axis=1),
        }
        uses = list(mm.outputs[0].uses())
        add = uses[0][0] if len(uses) == 1 and not mm.outputs[0].is_graph_output() else None
        c_v = None
        if add is not None and add.op_type == "Add":
            a, b = add.inputs
            c_v = b if a is mm.outputs[0] else a
            if c_v is None or c_v.const_value is None:
                c_v = None
        mm.replace_input_with(1, self._init(graph, v_v.name or "w", v2))
        drop_if_unused(graph, v_v)
        if c_v is not None and add is not None:
            c = _const(c_v)
            shift = (z.astype(np.float64) * s.astype(np.float64)) @ v.astype(np.float64)
            c2 = (c.astype(np.float64) - shift).astype(np.float32)
            add.replace_input_with(
                list(add.inputs).index(c_v), self._init(graph, c_v.name or "c", c2)
            )
            drop_if_unused(graph, c_v)
            mm.replace_input_with(0, cast.outputs[0])
            graph.remove([mul, sub], safe=True)
            out["bias"] = c_v.name
            out["zero_point"] = "in the bias"
        else:
            mm.replace_input_with(0, sub.outputs[0])
            graph.remove(mul, safe=True)
            out["zero_point"] = "kept (no consumer bias)"
        for t in params:
            if t is not None:
                drop_if_unused(graph, t)
        return out
