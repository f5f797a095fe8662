"""Deterministic node names, so that sites can name the nodes they are made of.

ONNX does not require node names, nor unique ones. :func:`ensure_node_names` gives every node of
the main graph and of every nested subgraph (If/Loop/Scan bodies) a unique, non-empty name:
existing unique names are kept, and each unnamed node or later duplicate becomes
``<op_type>_gq<k>`` with the smallest ``k`` not yet taken, in depth-first graph order. The result
depends only on the model, so discovery and conversion that both call it agree on every name.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx


def _graphs_dfs(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes in depth-first order: each node, then the subgraphs of its attributes."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs_dfs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs_dfs(g)


def needs_names(model: onnx.ModelProto) -> bool:
    """True when some node of the model has no name or shares its name with another node."""
    seen: set[str] = set()
    for node in _graphs_dfs(model.graph):
        if not node.name or node.name in seen:
            return True
        seen.add(node.name)
    return False


def _assigned(nodes: list[onnx.NodeProto]) -> list[str]:
    """The unique name of each node (depth-first order), the model left untouched."""
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    counter = 0
    names: list[str] = []
    for node in nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            names.append(node.name)
            continue
        while True:
            candidate = f"{node.op_type}_gq{counter}"
            counter += 1
            if candidate not in taken:
                break
        taken.add(candidate)
        seen.add(candidate)
        names.append(candidate)
    return names


def node_names(model: onnx.ModelProto) -> list[str]:
    """The names :func:`ensure_node_names` gives every node (depth-first order), without copying
    or changing the model."""
    return _assigned(list(_graphs_dfs(model.graph)))


def main_graph_node_names(model: onnx.ModelProto) -> list[str]:
    """Those names for the main graph's nodes, in graph order."""
    nodes = list(_graphs_dfs(model.graph))
    top = {id(n) for n in model.graph.node}
    return [name for n, name in zip(nodes, _assigned(nodes), strict=True) if id(n) in top]


def name_nodes_in_place(model: onnx.ModelProto) -> int:
    """Name unnamed and duplicate-named nodes of ``model`` in place; return how many changed."""
    nodes = list(_graphs_dfs(model.graph))
    changed = 0
    for node, name in zip(nodes, _assigned(nodes), strict=True):
        if node.name != name:
            node.name = name
            changed += 1
    return changed


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which every node has a unique name (``model`` is not modified).

    When all names are already present and unique, the copy is identical to the input, so the
    names reported by :func:`gelu_quant.graph.discover.find_gelu_sites` are the model's own.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    name_nodes_in_place(out)
    return out
