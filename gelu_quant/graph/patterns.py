"""Decomposed GELU spellings, recognised by symbolic evaluation instead of node templates.

A decomposed GELU has one transcendental *anchor* — ``Erf``, ``Tanh`` or ``Sigmoid`` — and
arithmetic around it. For each anchor the matcher

1. evaluates the anchor's argument backwards as a polynomial in one unknown tensor ``x``
   (``Div(x, √2)``, ``Mul(0.7071, x)``, ``√(2/π)·(x + 0.044715·Pow(x, 3))``,
   ``x·(1 + 0.044715·x·x)``… all reduce to coefficients);
2. walks forward from the anchor through its single consumer, one arithmetic node at a time,
   and evaluates that node's output as a polynomial in ``x`` and the anchor output ``T``; the
   first node where it equals the formula (``0.5·x + 0.5·x·T``, or ``x·T`` for QuickGELU) is
   the site's output. Operand order, association, ``Div`` by 2 versus ``Mul`` by 0.5 and where
   the 0.5 sits do not matter, and constants are compared with a tolerance;
3. checks that no intermediate tensor is used outside the matched nodes.

Backward evaluation descends only through values with a single consumer; a value read by several
nodes (the GELU input always is) is a leaf. Quantize→Dequantize pairs on intermediate values
(what ORT's ``quantize_static`` inserts inside a decomposed GELU) are looked through and become
part of the site; constants may be initializers, ``Constant`` nodes, or dequantized constants.

This is a hand-written matcher over onnx-ir rather than onnxscript's rewriter patterns: the
rewriter matches one fixed tree per rule (each association and operand order of a 3–5 factor
product would be its own rule, and every optional Q/DQ pair doubles them), it does not see
through ``Constant`` nodes or dequantized constants, and refusals are not tied to an anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import onnx_ir as ir

from gelu_quant.graph.irview import (
    STD_DOMAINS,
    const_array,
    consumers,
    dq_twins,
    pair_back,
    pair_forward,
)
from gelu_quant.graph.polynomial import Monomial, Poly, PolynomialError

ARITH_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Pow", "Identity"})
REL_TOL = 2e-3
"""Relative tolerance on GELU constants (covers fp16 and int8-dequantized constants)."""
ABS_TOL = 1e-6
MAX_FORWARD_STEPS = 8

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715
QUICK_ALPHA = 1.702


@dataclass(frozen=True)
class Formula:
    """One decomposed spelling: the anchor op, its argument in ``x``, the body in ``x, T``."""

    anchor: str
    form: str
    spelling: str
    argument: dict[Monomial, float]
    body: dict[Monomial, float]
    argument_text: str
    body_text: str


ERF = Formula(
    anchor="Erf",
    form="exact",
    spelling="pattern:erf",
    argument={(1,): 1.0 / math.sqrt(2.0)},
    body={(1, 0): 0.5, (1, 1): 0.5},
    argument_text="x/√2 (0.707107·x)",
    body_text="0.5·x·(1 + erf(x/√2))",
)
TANH = Formula(
    anchor="Tanh",
    form="tanh",
    spelling="pattern:tanh",
    argument={(1,): SQRT_2_OVER_PI, (3,): SQRT_2_OVER_PI * TANH_CUBIC},
    body={(1, 0): 0.5, (1, 1): 0.5},
    argument_text="√(2/π)·(x + 0.044715·x³) (0.797885·x + 0.0356774·x^3)",
    body_text="0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))",
)
QUICK = Formula(
    anchor="Sigmoid",
    form="quick",
    spelling="pattern:quick",
    argument={(1,): QUICK_ALPHA},
    body={(1, 1): 1.0},
    argument_text="1.702·x",
    body_text="x·sigmoid(1.702·x)",
)
TANH_SIGMOID = Formula(
    anchor="Sigmoid",
    form="tanh",
    spelling="pattern:tanh-sigmoid",
    argument={(1,): 2 * SQRT_2_OVER_PI, (3,): 2 * SQRT_2_OVER_PI * TANH_CUBIC},
    body={(1, 1): 1.0},
    argument_text="2·√(2/π)·(x + 0.044715·x³) (1.59577·x + 0.0713548·x^3)",
    body_text="x·sigmoid(2·√(2/π)·(x + 0.044715·x³))",
)
"""The tanh form rewritten with 0.5·(1 + tanh(z)) = sigmoid(2z)."""
FORMULAS = {f.anchor: f for f in (ERF, TANH, QUICK)}


class Refused(Exception):
    """The expression under a node is not a polynomial of the expected kind (message says why)."""


@dataclass
class _Evaluator:
    """Backward symbolic evaluation of a value as a polynomial over a few atom tensors."""

    atoms: dict[ir.Value, int]
    names: tuple[str, ...]
    new_atom_allowed: bool = False
    nodes: list[ir.Node] = field(default_factory=list)
    const_nodes: list[ir.Node] = field(default_factory=list)
    const_rank: int = 0
    """Highest rank among the one-element constants read (rank > 1 may broadcast the result)."""

    @property
    def nvars(self) -> int:
        return len(self.names)

    def _leaf(self, v: ir.Value) -> Poly:
        if v in self.atoms:
            return Poly.atom(self.nvars, self.atoms[v])
        for atom, i in self.atoms.items():
            if dq_twins(atom, v):  # a dedicated DQ of the same int8 tensor (one DQ per reader)
                self.nodes.append(v.producer())  # type: ignore[arg-type]
                return Poly.atom(self.nvars, i)
        if self.new_atom_allowed and not self.atoms:
            self.atoms[v] = 0
            return Poly.atom(self.nvars, 0)
        known = ", ".join(f"{self.names[i]}={a.name}" for a, i in self.atoms.items())
        raise Refused(f"depends on tensor {v.name!r}, which is none of {known}")

    def poly(self, v: ir.Value | None, top: bool = False) -> Poly:
        """The polynomial computed into ``v`` (``top``: evaluate even if ``v`` is shared)."""
        if v is None:
            raise Refused("missing input")
        if v in self.atoms:
            return Poly.atom(self.nvars, self.atoms[v])
        arr = const_array(v, self.const_nodes)
        if arr is not None:
            if arr.size != 1:
                raise Refused(f"constant {v.name!r} has shape {list(arr.shape)}, not a scalar")
            self.const_rank = max(self.const_rank, arr.ndim)
            return Poly.const(self.nvars, float(arr.reshape(-1)[0]))
        node = v.producer()
        if node is None:
            return self._leaf(v)
        if not top and (v.is_graph_output() or len(consumers(v)) != 1):
            return self._leaf(v)
        pair = pair_back(v)
        if pair is not None:
            inner, q, dq = pair
            self.nodes += [q, dq]
            return self.poly(inner)
        if node.domain not in STD_DOMAINS or node.op_type not in ARITH_OPS:
            return self._leaf(v)
        self.nodes.append(node)
        return self._apply(node)

    def _apply(self, node: ir.Node) -> Poly:
        op = node.op_type
        ins = list(node.inputs)
        try:
            if op == "Identity":
                return self.poly(ins[0])
            if op == "Neg":
                return -self.poly(ins[0])
            a, b = self.poly(ins[0]), self.poly(ins[1])
            if op == "Add":
                return a + b
            if op == "Sub":
                return a - b
            if op == "Mul":
                return a * b
            if op == "Div":
                d = b.constant_value()
                if d is None or d == 0.0 or not math.isfinite(d):
                    raise Refused(f"{node.name!r} divides by a non-constant")
                return a.scale(1.0 / d)
            # Pow
            e = b.constant_value()
            if e is None or not math.isfinite(e) or e != round(e):
                raise Refused(f"{node.name!r} raises to a non-integer or non-constant power")
            return a.power(int(e))
        except PolynomialError as err:
            raise Refused(f"{node.name!r}: {err}") from err


@dataclass
class PatternMatch:
    """A decomposed GELU found around one anchor."""

    formula: Formula
    x: ir.Value
    output: ir.Value
    nodes: list[ir.Node]
    """Arithmetic, anchor and inner Q/DQ nodes, plus constant nodes used only by the site."""
    alpha: float | None = None


@dataclass
class PatternRefusal:
    """An anchor whose surroundings almost formed a GELU."""

    formula: Formula
    anchor: ir.Node
    reason: str
    nodes: list[ir.Node] = field(default_factory=list)


def match_anchor(
    anchor: ir.Node, order: dict[ir.Node, int]
) -> PatternMatch | PatternRefusal | None:
    """Try to read a decomposed GELU around ``anchor`` (an Erf, Tanh or Sigmoid node).

    Returns None for a Sigmoid that is not of the form ``x·σ(αx)`` (sigmoids are common and
    uninteresting), a refusal with its reason for an almost-GELU, or the match. ``order`` maps
    the nodes of the anchor's graph to their position (node lists come back in graph order).
    """
    formula = FORMULAS[anchor.op_type]
    quiet = formula is QUICK

    def refuse(reason: str, nodes: list[ir.Node] | None = None) -> PatternRefusal | None:
        return None if quiet else PatternRefusal(formula, anchor, reason, nodes or [anchor])

    arg_eval = _Evaluator(atoms={}, names=("x",), new_atom_allowed=True)
    try:
        arg = arg_eval.poly(anchor.inputs[0])
    except Refused as err:
        return refuse(f"{anchor.op_type} argument is not a polynomial in one tensor: {err}")
    if not arg_eval.atoms:
        return refuse(f"{anchor.op_type} argument is a constant")
    (x,) = arg_eval.atoms
    alpha: float | None = None
    if formula is QUICK and (3,) in arg.terms:
        formula, quiet = TANH_SIGMOID, False
    if formula is QUICK:
        alpha = arg.terms.get((1,))
        if alpha is None or set(arg.terms) != {(1,)}:
            return None
    elif not arg.matches(formula.argument, REL_TOL, ABS_TOL):
        shared = _shared_argument(formula, anchor)
        if shared is not None:
            return refuse(shared)
        return refuse(
            f"{anchor.op_type} argument is {arg.format(('x',))}, expected {formula.argument_text}"
        )

    found = _walk_forward(formula, anchor, x, arg_eval)
    if isinstance(found, str):
        return refuse(found)
    root, body_eval = found
    core = {*arg_eval.nodes, anchor, *body_eval.nodes}
    nodes = _with_private_constants(core, [*arg_eval.const_nodes, *body_eval.const_nodes])
    nodes.sort(key=lambda n: order.get(n, len(order)))
    problem = _escaping_intermediate(core, nodes, root.outputs[0]) or _broadcasting_constant(
        x, max(arg_eval.const_rank, body_eval.const_rank)
    )
    if problem is not None:
        return PatternRefusal(formula, anchor, problem, nodes)
    if (
        formula is QUICK
        and alpha is not None
        and not math.isclose(alpha, QUICK_ALPHA, rel_tol=REL_TOL)
    ):
        kind = "SiLU/Swish" if math.isclose(alpha, 1.0, rel_tol=REL_TOL) else "a scaled swish"
        return PatternRefusal(
            formula,
            anchor,
            f"x·Sigmoid({alpha:.6g}·x) is {kind}, not QuickGELU (alpha {QUICK_ALPHA})",
            nodes,
        )
    return PatternMatch(formula, x, root.outputs[0], nodes, alpha=alpha)


def _shared_argument(formula: Formula, anchor: ir.Node) -> str | None:
    """Why a correct argument was not accepted: it is computed by the pattern but read elsewhere."""
    v = anchor.inputs[0]
    if v is None or v.producer() is None:
        return None
    if not v.is_graph_output() and len(consumers(v)) == 1:
        return None
    probe = _Evaluator(atoms={}, names=("x",), new_atom_allowed=True)
    try:
        arg = probe.poly(v, top=True)
    except Refused:
        return None
    if not probe.atoms or not arg.matches(formula.argument, REL_TOL, ABS_TOL):
        return None
    where = "a graph output" if v.is_graph_output() else f"read by {len(consumers(v))} nodes"
    return (
        f"{anchor.op_type} argument {v.name!r} ({formula.argument_text}) is also {where}: "
        "not replaceable"
    )


def _walk_forward(
    formula: Formula, anchor: ir.Node, x: ir.Value, arg_eval: _Evaluator
) -> tuple[ir.Node, _Evaluator] | str:
    """Follow the anchor's output forward until the body formula is complete (or say why not)."""
    t_out = anchor.outputs[0]
    v = t_out
    last = ""
    for _ in range(MAX_FORWARD_STEPS):
        if v.is_graph_output():
            return f"{v.name!r} is a graph output before the formula is complete{last}"
        users = consumers(v)
        if len(users) != 1:
            names = ", ".join(repr(u.name) for u in users) or "nothing"
            return (
                f"intermediate {v.name!r} is read by {len(users)} nodes ({names}): "
                f"not replaceable{last}"
            )
        pair = pair_forward(v)
        if pair is not None:
            v = pair[0]
            continue
        user = users[0]
        if user.domain not in STD_DOMAINS or user.op_type not in ARITH_OPS:
            return (
                f"{v.name!r} flows into {user.op_type} {user.name!r}{_qoperator_hint(user)}{last}"
            )
        body_eval = _Evaluator(atoms={x: 0, t_out: 1}, names=("x", "T"))
        try:
            body = body_eval.poly(user.outputs[0], top=True)
        except Refused as err:
            return f"at {user.name!r}: {err}{last}"
        if body.matches(formula.body, REL_TOL, ABS_TOL):
            return user, body_eval
        last = f" (last expression {body.format(('x', 'T'))}, expected {formula.body_text})"
        v = user.outputs[0]
    return f"no complete formula within {MAX_FORWARD_STEPS} nodes{last}"


def _broadcasting_constant(x: ir.Value, const_rank: int) -> str | None:
    """Why a one-element constant of rank > 1 may change the output shape, or None if it can't."""
    if const_rank <= 1:
        return None
    rank = None if x.shape is None else len(x.shape)
    if rank is not None and rank >= const_rank:
        return None
    known = "unknown" if rank is None else str(rank)
    return (
        f"a rank-{const_rank} constant may broadcast the result beyond the input's rank "
        f"({known}): the output shape is not the input's"
    )


def _qoperator_hint(user: ir.Node) -> str:
    """A hint when the formula continues in integer QLinear* ops (ORT's QOperator format)."""
    if user.op_type != "QuantizeLinear":
        return ""
    nxt = [u.op_type for u in consumers(user.outputs[0]) if u.op_type.startswith("QLinear")]
    if not nxt:
        return ""
    return (
        f" and on into {nxt[0]}: the formula continues in integer QLinear ops (a QOperator-"
        "format model); quantize with the QDQ format to make it replaceable"
    )


def _with_private_constants(core: set[ir.Node], const_nodes: list[ir.Node]) -> list[ir.Node]:
    """``core`` plus the constant-producing nodes whose outputs only the site reads."""
    included = set(core)
    pending = [n for n in dict.fromkeys(const_nodes) if n not in included]
    changed = True
    while changed:
        changed = False
        for n in list(pending):
            outs_private = all(
                not o.is_graph_output() and all(u in included for u in consumers(o))
                for o in n.outputs
            )
            if outs_private:
                included.add(n)
                pending.remove(n)
                changed = True
    return list(included)


def _escaping_intermediate(
    core: set[ir.Node], nodes: list[ir.Node], output: ir.Value
) -> str | None:
    """Why the site cannot be replaced (an intermediate read outside it), or None."""
    members = set(nodes)
    for n in core:
        for o in n.outputs:
            if o is output:
                continue
            if o.is_graph_output():
                return f"intermediate {o.name!r} is a graph output: not replaceable"
            for u in consumers(o):
                if u not in members:
                    return (
                        f"intermediate {o.name!r} is also read by {u.op_type} {u.name!r}: "
                        "not replaceable"
                    )
    return None
