"""Opening a model for evaluation, with chosen intermediate tensors exposed as extra outputs.

A *probe copy* is the model with some internal tensors (each GELU site's input and output) added
as graph outputs, so one ORT run returns the model's outputs and the sites' tensors together. The
original file is never modified. Small models go to ORT as in-memory bytes; models whose protobuf
would exceed 2 GB are saved to a temporary directory with external data.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from gelu_quant.errors import ModelError
from gelu_quant.modelfile import read_model, uses_external_data

_SAFE_INLINE = 1_800_000_000  # leave headroom below protobuf's 2 GB limit


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as ORT sees it: name, element type (``tensor(float)``), shape."""

    name: str
    type: str
    shape: tuple[int | str | None, ...] | None
    """None when the rank is unknown."""


def load_model(path: Path, *, external_data: bool = False) -> onnx.ModelProto:
    """The model at ``path`` (external data checked, loaded only when asked)."""
    return read_model(path, external_data=external_data)


def produced_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors of the main graph: inputs, initializers and node outputs."""
    g = model.graph
    names = {i.name for i in g.input} | {i.name for i in g.initializer}
    for node in g.node:
        names.update(o for o in node.output if o)
    return names


def add_outputs(model: onnx.ModelProto, names: Iterable[str]) -> list[str]:
    """Append ``names`` (main-graph tensors) as untyped graph outputs; return those added.

    Names already among the outputs are kept once and counted as added; names that no tensor of
    the main graph carries are skipped. ORT infers the type of an untyped output.
    """
    existing = {o.name for o in model.graph.output}
    have = produced_tensors(model)
    added: list[str] = []
    for n in names:
        if n in existing:
            added.append(n)
            continue
        if n not in have:
            continue
        model.graph.output.append(onnx.ValueInfoProto(name=n))
        existing.add(n)
        added.append(n)
    return added


def _shape(shape: Sequence[int | str | None] | None) -> tuple[int | str | None, ...] | None:
    return None if shape is None else tuple(shape)


class ProbeSession:
    """An ORT session over a (probe copy of a) model; ``run(feeds)`` returns name → array.

    The probe copy is the model's graph without its external data, handed to ORT as bytes with
    the model's folder as the place to read external initializers from, so weights are never
    copied through Python. Only a model whose inline weights leave no room below protobuf's 2 GB
    limit is written to a temporary directory with external data instead. Use as a context
    manager: that directory is removed on exit.
    """

    def __init__(
        self,
        path: Path,
        extra_outputs: Sequence[str] = (),
        *,
        threads: int = 0,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        model = load_model(path)
        external = uses_external_data(model)
        original = [o.name for o in model.graph.output]
        self.extra_outputs = add_outputs(model, extra_outputs) if extra_outputs else []
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            if model.ByteSize() < _SAFE_INLINE:
                if external:
                    opts.add_session_config_entry(
                        "session.model_external_initializers_file_folder_path",
                        str(path.resolve().parent),
                    )
                src: str | bytes = model.SerializeToString()
            else:
                if external:
                    onnx.load_external_data_for_model(model, str(path.resolve().parent))
                self._tmp = tempfile.TemporaryDirectory(prefix="gelu-quant-probe-")
                probe = Path(self._tmp.name) / "probe.onnx"
                onnx.save(
                    model,
                    str(probe),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location="probe.onnx.data",
                )
                src = str(probe)
            del model
            self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            self.close()
            raise ModelError(f"ONNX Runtime cannot open {path}: {e}") from e
        self.inputs = [
            TensorSpec(i.name, i.type, _shape(i.shape)) for i in self.session.get_inputs()
        ]
        outs = {o.name: o for o in self.session.get_outputs()}
        self.outputs = [
            TensorSpec(n, outs[n].type, _shape(outs[n].shape)) for n in original if n in outs
        ]
        self._names = list(outs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self._names, feeds)
        except Exception as e:
            raise ModelError(f"ONNX Runtime failed on a batch: {e}") from e
        return dict(zip(self._names, values, strict=True))

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
