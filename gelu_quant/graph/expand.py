"""Inlining the ``gelu_quant`` functions (``convert --expand``)."""

from __future__ import annotations

import onnx

from gelu_quant.graph.ops import DOMAIN


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
