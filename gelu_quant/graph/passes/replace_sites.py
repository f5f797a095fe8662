"""The pass that replaces GELU sites by ``gelu_quant`` ops, on onnx-ir.

:class:`ReplaceGeluSites` asks :func:`~gelu_quant.graph.passes.site_rewrites.rewrite_site` for
each site's :class:`~gelu_quant.graph.passes.site_rewrites.Rewrite`, then applies it to the
graph: new initializers registered, new nodes inserted where the site's last node was, the
readers (and graph outputs) of every taken-over tensor moved to the new value, which takes the
old name, the site's nodes removed, and initializers that only they read dropped. Every other
node is left as it was. What happened to each site is in :attr:`ReplaceGeluSites.records`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import onnx
import onnx_ir as ir

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.graph.manifest import SiteRecord
from gelu_quant.graph.ops import CustomOp
from gelu_quant.graph.passes.site_rewrites import Rewrite, SiteContext, rewrite_site
from gelu_quant.graph.sites import GeluSite
from gelu_quant.graph.targets import TARGETS, SiteChoice
from gelu_quant.lut.error_report import error_report
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.numerics import GeluForm


def _report(spec: GeluApprox) -> object:
    """The spec's error report; for grouped tables the worst group's."""
    if isinstance(spec, GroupedLutSpec):
        return max((error_report(g) for g in spec.groups), key=lambda r: r.max_abs)
    return error_report(spec)


class _Namer:
    """Fresh names: ``base``, else ``base_1``, ``base_2``, … not yet taken."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name


def all_names(graph: ir.Graph) -> set[str]:
    """Every node, value and graph-boundary name of ``graph`` and its subgraphs."""
    names: set[str] = set()
    graphs = [graph]
    for node in ir.traversal.RecursiveGraphIterator(graph):
        names.add(node.name or "")
        names.update(v.name for v in node.inputs if v is not None and v.name)
        names.update(v.name for v in node.outputs if v.name)
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                graphs.append(attr.as_graph())
            elif attr.type == ir.AttributeType.GRAPHS:
                graphs.extend(attr.as_graphs())
    for g in graphs:
        names.update(v.name for v in g.inputs if v.name)
        names.update(v.name for v in g.outputs if v.name)
        names.update(g.initializers)
    names.discard("")
    return names


@dataclass
class ReplaceGeluSites(ir.passes.InPlacePass):
    """Replace ``sites`` of the main graph; ``node_names[i]`` names main-graph node ``i`` the
    way discovery named it (unnamed nodes get deterministic names there, not in the model)."""

    sites: Sequence[GeluSite]
    context: SiteContext
    node_names: Sequence[str]
    taken_names: set[str]
    form_of: Callable[[GeluSite], GeluForm]
    """The form a site's approximation must have (SpecError: the site is skipped)."""
    selected: tuple[str, ...] | None = None
    choices: Mapping[str, SiteChoice] = field(default_factory=dict)
    """Per-site target, method and groups over ``context``'s (site id -> choice)."""
    records: list[SiteRecord] = field(default_factory=list)
    functions: dict[str, CustomOp] = field(default_factory=dict)
    specs: dict[str, GeluApprox] = field(default_factory=dict)
    """Converted site id -> its approximation (the numpy reference of what the graph runs)."""

    def __post_init__(self) -> None:
        super().__init__()

    def _site_context(self, ctx: SiteContext, site: GeluSite) -> SiteContext:
        c = self.choices.get(site.id)
        if c is None:
            return replace(ctx, form=self.form_of(site))
        own = TARGETS[c.target]
        return replace(ctx, form=self.form_of(site), target=own, method=c.method, groups=c.groups)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        nodes = list(graph)
        if len(nodes) != len(self.node_names):
            raise ModelError("the graph changed between discovery and conversion")
        by_name = dict(zip(self.node_names, nodes, strict=True))
        order = {id(n): i for i, n in enumerate(nodes)}
        values = _values_by_name(graph)
        namer = _Namer(set(self.taken_names))

        def still_read(tensor: str, removed: set[str]) -> bool:
            v = values.get(tensor)
            if v is None:
                return False
            gone = {id(by_name[n]) for n in removed if n in by_name}
            return v.is_graph_output() or any(id(u.node) not in gone for u in v.uses())

        def output_of(node_name: str) -> str:
            if node_name not in by_name:
                raise ModelError(f"Q/DQ node {node_name!r} of the site is not in the main graph")
            return by_name[node_name].outputs[0].name or ""

        ctx = replace(self.context, new_name=namer, still_read=still_read, output_of=output_of)
        claimed: set[str] = set()
        rewrites: list[Rewrite] = []
        for site in self.sites:
            if site.in_subgraph:
                self.records.append(_skip(site, f"inside subgraph {site.graph}; not converted"))
                continue
            if self.selected is not None and site.id not in self.selected:
                self.records.append(_skip(site, "not selected (--site)"))
                continue
            try:
                missing = [n for n in site.nodes if n not in by_name]
                if missing:
                    raise ModelError(f"nodes {missing} of the site are not in the main graph")
                rw = rewrite_site(site, self._site_context(ctx, site))
                _check_internal_tensors(rw, by_name, still_read)
            except (ModelError, SpecError) as e:
                self.records.append(_skip(site, str(e)))
                continue
            if rw.remove & claimed:
                self.records.append(_skip(site, "shares nodes with another site"))
                continue
            claimed |= rw.remove
            rewrites.append(rw)
            self.specs[site.id] = rw.spec
            rec = _converted(rw, by_name, order)
            if site.id in self.choices:
                rec = replace(rec, target=self.choices[site.id].target)
            self.records.append(rec)
            if rw.op is not None:
                self.functions.setdefault(rw.op.op_type, rw.op)
        for rw in rewrites:
            _apply(graph, rw, by_name, order, values)
        return ir.passes.PassResult(model, modified=bool(rewrites))


def _values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    values: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    values.update({k: v for k, v in graph.initializers.items()})
    for n in graph:
        values.update({v.name: v for v in n.outputs if v.name})
    for n in graph:  # and what nodes read without anything defining it (invalid, but kept)
        for v in n.inputs:
            if v is not None and v.name and v.name not in values:
                values[v.name] = v
    return values


def _skip(site: GeluSite, reason: str) -> SiteRecord:
    return SiteRecord.for_site(site, "skipped", reason=reason)


def _converted(rw: Rewrite, by_name: dict[str, ir.Node], order: dict[int, int]) -> SiteRecord:
    rep = _report(rw.spec)
    replaced = sorted(rw.remove, key=lambda n: order[id(by_name[n])])
    return SiteRecord.for_site(
        rw.site,
        "converted",
        mode=rw.mode,
        range=rw.range,
        range_source=rw.range_source,
        op_type=None if rw.op is None else rw.op.op_type,
        body="standard-ops" if rw.op is None else rw.op.body_kind,
        body_notes=() if rw.op is None else rw.op.notes,
        replaced_nodes=tuple(replaced),
        added_nodes=tuple(n.name for n in rw.nodes),
        output_tensor=rw.output_tensor,
        quantized_output=rw.quantized_output,
        spec=rw.spec.to_json(),
        error=rep.to_json(),  # type: ignore[attr-defined]
        form=rw.spec.form,
        cost=getattr(rw.spec, "cost", None),
        code_container=rw.code_container,
    )


def _check_internal_tensors(
    rw: Rewrite, by_name: dict[str, ir.Node], still_read: Callable[[str, set[str]], bool]
) -> None:
    """Refuse a site whose removed nodes produce tensors that other nodes still read."""
    written = {o for n in rw.nodes for o in n.output}
    for name in rw.remove:
        for out in by_name[name].outputs:
            t = out.name or ""
            if t and t not in written and still_read(t, rw.remove):
                raise ModelError(
                    f"tensor {t!r} inside the GELU is also read outside it; the site cannot be "
                    "replaced without changing other nodes"
                )


def _initializer(t: onnx.TensorProto) -> ir.Value:
    tensor = ir.serde.deserialize_tensor(t)
    return ir.Value(
        name=t.name,
        type=ir.TensorType(tensor.dtype),
        shape=ir.Shape(list(t.dims)),
        const_value=tensor,
    )


def _apply(
    graph: ir.Graph,
    rw: Rewrite,
    by_name: dict[str, ir.Node],
    order: dict[int, int],
    values: dict[str, ir.Value],
) -> None:
    """Put one rewrite into the graph (see the module docstring)."""
    env = dict(values)
    for t in rw.initializers:
        v = _initializer(t)
        graph.register_initializer(v)
        env[t.name] = v
    old_values: list[ir.Value] = []
    new_values: list[ir.Value] = []
    new_nodes: list[ir.Node] = []
    for proto in rw.nodes:
        node = ir.Node(
            proto.domain,
            proto.op_type,
            [env[i] if i else None for i in proto.input],
            attributes=[ir.serde.deserialize_attribute(a) for a in proto.attribute],
            num_outputs=len(proto.output),
            name=proto.name,
        )
        for out, name in zip(node.outputs, proto.output, strict=True):
            if name in rw.takes_over and name in values:
                old = values[name]
                out.type, out.shape = old.type, old.shape
                old_values.append(old)
                new_values.append(out)
            out.name = name
            env[name] = out
        new_nodes.append(node)
    removed = sorted((by_name[n] for n in rw.remove), key=lambda n: order[id(n)])
    reads = [v for n in removed for v in n.inputs if v is not None]
    ir.convenience.replace_all_uses_with(old_values, new_values, replace_graph_outputs=True)
    graph.insert_after(removed[-1], new_nodes)
    graph.remove(removed, safe=True)
    for old, new in zip(old_values, new_values, strict=True):
        old.name, new.name = None, new.name  # the new value alone carries the name now
    for v in reads:  # initializers only the removed nodes read
        if v.is_initializer() and not v.uses() and not v.is_graph_output() and v.name:
            graph.initializers.pop(v.name, None)
    values.update({k: v for k, v in env.items() if k in values or k in rw.takes_over})


def restore_value_info(
    out: onnx.ModelProto, original: Iterable[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    """Keep the input model's own ``value_info`` entries (those whose tensor still exists), as
    they were: onnx-ir would otherwise write one for every typed intermediate value."""
    g = out.graph
    produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    produced |= {t.name for t in g.initializer}
    vi = [v for v in original if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(vi)
    return out


__all__ = ["ReplaceGeluSites", "all_names", "restore_value_info"]
