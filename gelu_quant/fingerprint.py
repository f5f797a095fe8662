"""A model's fingerprint: ``sha256:`` over a canonical description of what the model computes.

Hashed: opset imports, local functions, graph inputs and outputs (names and types), every node
(op type, domain, inputs, outputs, attributes in deterministic protobuf serialisation, subgraphs
included) in order, and every initializer's name, type, dims and the sha256 of its data
(external data read from its file, never from outside the model's folder). Producer, doc
strings, metadata, value_info, IR version and how the weights are laid out on disk are left
out, so re-saving a model (or moving weights to external data) keeps its fingerprint, while any
change to the graph or a weight changes it. Cost: one sha256 pass over the weights (~0.2 s for
90 MB). Ranges files and manifests record it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gelu_quant.errors import ModelError
from gelu_quant.modelfile import external_ref, model_dir, read_model


def _tensor_data_digest(t: onnx.TensorProto, base_dir: Path | None) -> str:
    h = hashlib.sha256()
    if t.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            raise ModelError(
                f"initializer {t.name!r} uses external data but the model's folder "
                "is unknown; give the model by path"
            )
        ref = external_ref(t, base_dir, f"tensor {t.name!r}")  # never reads outside the folder
        loc = ref.path
        try:
            with loc.open("rb") as f:
                f.seek(ref.offset)
                remaining: int | None = ref.length
                while True:
                    chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
                    if not chunk:
                        break
                    h.update(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
                        if remaining <= 0:
                            break
        except OSError as e:
            raise ModelError(f"cannot read external data {str(loc)!r} of {t.name!r}: {e}") from None
    elif t.HasField("raw_data"):
        h.update(t.raw_data)
    else:
        h.update(np.ascontiguousarray(onnx.numpy_helper.to_array(t)).tobytes())
    return h.hexdigest()


def _graph_digest(g: onnx.GraphProto, h: Any, base_dir: Path | None) -> None:
    def put(*parts: object) -> None:
        for p in parts:
            b = p if isinstance(p, bytes) else str(p).encode()
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)

    for vi in g.input:
        put("in", vi.name, vi.type.SerializeToString(deterministic=True))
    for vi in g.output:
        put("out", vi.name, vi.type.SerializeToString(deterministic=True))
    for t in list(g.initializer):
        put("init", t.name, t.data_type, list(t.dims), _tensor_data_digest(t, base_dir))
    for n in g.node:
        put("node", n.domain, n.op_type, list(n.input), list(n.output))
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                put("attr", a.name)
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    _graph_digest(sub, h, base_dir)
            elif a.type == onnx.AttributeProto.TENSOR:
                put(
                    "attr",
                    a.name,
                    a.t.data_type,
                    list(a.t.dims),
                    _tensor_data_digest(a.t, base_dir),
                )
            else:
                put("attr", a.name, a.SerializeToString(deterministic=True))


def model_fingerprint(
    model: str | os.PathLike[str] | onnx.ModelProto, base_dir: Path | None = None
) -> str:
    """``sha256:<hex>`` of what the model computes (see the module docstring)."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(os.fspath(model))
        base_dir = model_dir(path)
        model = read_model(path)
    h = hashlib.sha256()
    for imp in sorted((i.domain, i.version) for i in model.opset_import):
        h.update(f"opset {imp[0]} {imp[1]};".encode())
    for f in model.functions:
        h.update(f.SerializeToString(deterministic=True))
    _graph_digest(model.graph, h, base_dir)
    return "sha256:" + h.hexdigest()
