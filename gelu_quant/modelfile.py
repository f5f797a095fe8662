"""Reading ONNX model files safely: one loader and one external-data check for every command.

A model file is untrusted input. Its tensors may keep their bytes in *external data* files named
by a relative ``location``; a hostile or broken model can name ``../secret.bin``, an absolute
path, or a symlink inside its folder that leads outside, or a file that is missing or shorter than
the tensors it declares. :func:`check_external_data` refuses all of these with one
:class:`~gelu_quant.errors.ModelError` *before* anything reads an external file, and
:func:`read_model` (the loader every command uses) runs it on every model it reads. The rule is
ONNX Runtime's and onnx's own: external data lives in the model's folder or below it.

A model file of 2 GB or more cannot be a valid ONNX protobuf (protobuf's limit); such models
keep their weights in external data, and :func:`read_model` says so instead of letting the
protobuf parser fail obscurely.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import Message

from gelu_quant.errors import BadInputError, ModelError

PROTOBUF_LIMIT = (1 << 31) - 1
"""Largest serialized protobuf message: a model file at least this big cannot be parsed."""

_FOUR_BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
    _FOUR_BIT.add(onnx.TensorProto.FLOAT4E2M1)


@dataclass(frozen=True)
class ExternalRef:
    """One tensor's external data, validated: the file inside the model folder and the span."""

    tensor: str
    path: Path
    offset: int
    length: int


def _tensor_nbytes(t: onnx.TensorProto) -> int | None:
    """Bytes the tensor's data must hold (None when the element type has no fixed size)."""
    n = 1
    for d in t.dims:
        if d < 0:
            return None
        n *= d
    if t.data_type in _FOUR_BIT:
        return (n + 1) // 2
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # STRING, UNDEFINED, unknown codes
        return None
    return n * itemsize


def iter_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor stored in the model: initializers (dense and sparse), tensor attributes of
    every node, in every subgraph and every model-local function; with a description for
    messages."""

    def graph(g: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
        for t in g.initializer:
            yield f"initializer {t.name!r}{where}", t
        for s in g.sparse_initializer:
            yield f"sparse initializer {s.values.name!r}{where}", s.values
            yield f"sparse initializer {s.values.name!r} (indices){where}", s.indices
        yield from nodes(g.node, where)

    def nodes(ns: object, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
        for n in ns:  # type: ignore[attr-defined]
            for a in n.attribute:
                label = f"attribute {a.name!r} of node {n.name or n.op_type!r}{where}"
                if a.type == onnx.AttributeProto.TENSOR:
                    yield label, a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    for t in a.tensors:
                        yield label, t
                elif a.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield label, a.sparse_tensor.values
                    yield label, a.sparse_tensor.indices
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from graph(a.g, f" in a subgraph of {n.name or n.op_type!r}")
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        yield from graph(g, f" in a subgraph of {n.name or n.op_type!r}")

    yield from graph(model.graph, "")
    for f in model.functions:
        yield from nodes(f.node, f" in function {f.domain}:{f.name}")


def _external_fields(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _outside(base: Path, what: str, location: str, detail: str) -> ModelError:
    return ModelError(
        f"refusing the model: the external data of {what} is {location!r}, {detail}; "
        f"external data must be a file inside the model's folder {str(base)!r}"
    )


def external_ref(t: onnx.TensorProto, base_dir: str | os.PathLike[str], what: str) -> ExternalRef:
    """The validated external data of one tensor (see the module docstring for the rules)."""
    base = Path(base_dir).absolute().resolve()
    fields = _external_fields(t)
    location = fields.get("location", "")
    if not location:
        raise ModelError(f"refusing the model: {what} keeps external data but names no file")
    if "\x00" in location:
        raise _outside(base, what, location, "a path with a NUL byte")
    pure = Path(location)
    drive = len(location) > 1 and location[1] == ":"
    if pure.is_absolute() or location.startswith(("/", "\\")) or drive:
        raise _outside(base, what, location, "an absolute path")
    if ".." in pure.parts or ".." in location.replace("\\", "/").split("/"):
        raise _outside(base, what, location, "a path that leaves the folder")
    target = (base / pure).resolve()
    if not target.is_relative_to(base):
        raise _outside(base, what, location, f"which leads outside it (to {str(target)!r})")
    if not target.exists():
        raise ModelError(
            f"the external data file {location!r} of {what} is missing "
            f"(looked in {str(base)!r}); copy it beside the model"
        )
    if not target.is_file():
        raise ModelError(f"the external data {location!r} of {what} is not a regular file")
    try:
        offset = int(fields.get("offset", "0") or 0)
        length_s = fields.get("length", "")
        length = int(length_s) if length_s else -1
    except ValueError:
        raise ModelError(
            f"{what}: external data offset/length are not integers "
            f"({fields.get('offset')!r}, {fields.get('length')!r})"
        ) from None
    if offset < 0 or length < -1:
        raise ModelError(f"{what}: negative external data offset or length")
    need = _tensor_nbytes(t)
    if length == -1:
        if need is None:
            raise ModelError(f"{what}: external data without a length for a variable-size type")
        length = need
    elif need is not None and length < need:
        raise ModelError(
            f"{what}: external data declares {length} bytes but the tensor needs {need}"
        )
    size = target.stat().st_size
    if offset + length > size:
        raise ModelError(
            f"the external data file {location!r} is shorter than {what} declares "
            f"({size} bytes, needs {offset + length}); the file is truncated or not this model's"
        )
    return ExternalRef(what, target, offset, length)


def check_external_data(
    model: onnx.ModelProto, base_dir: str | os.PathLike[str]
) -> list[ExternalRef]:
    """Validate every external-data reference of ``model`` against the folder ``base_dir``.

    Raises :class:`ModelError` (exit code 2 in the CLI) for a location outside the folder
    (``..``, absolute, or a symlink leading out), a missing file, or a file shorter than the
    tensors it declares. Reads no external file: only its metadata.
    """
    refs = []
    for what, t in iter_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            refs.append(external_ref(t, base_dir, what))
    return refs


def uses_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of the model (subgraphs and functions included) is external."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for _, t in iter_tensors(model))


def model_dir(path: str | os.PathLike[str]) -> Path:
    """The folder a model's external data is resolved against (symlinks in it resolved)."""
    return Path(path).absolute().parent.resolve()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInputError(f"{str(path)!r}: no such model file; give the path of an .onnx file")
    if not path.is_file():
        raise BadInputError(f"{str(path)!r} is not a file; give the path of an .onnx file")
    size = path.stat().st_size
    if size >= PROTOBUF_LIMIT:
        raise ModelError(
            f"{str(path)!r} is {size / 2**30:.1f} GB: a single ONNX file cannot exceed protobuf's "
            "2 GB limit; save the model with external data "
            "(onnx.save_model(..., save_as_external_data=True))"
        )
    if size == 0:
        raise ModelError(f"{str(path)!r} is empty, not an ONNX model")


def _is_repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 6; `label` is gone in 7
    return bool(flag) if flag is not None else bool(fd.label == fd.LABEL_REPEATED)


def _check_strings(msg: Message) -> None:
    """Read every string field (protobuf decodes UTF-8 lazily, on access): invalid UTF-8 fails
    here, not deep inside a later stage. Bytes fields (tensor data) are not touched."""
    for fd in msg.DESCRIPTOR.fields:
        if fd.type == fd.TYPE_BYTES:
            continue
        repeated = _is_repeated(fd)
        if fd.type == fd.TYPE_STRING:
            # upb hands invalid UTF-8 back as bytes (other backends raise UnicodeDecodeError)
            values = getattr(msg, fd.name) if repeated else [getattr(msg, fd.name)]
            for v in values:
                if not isinstance(v, str):
                    raise UnicodeDecodeError("utf-8", bytes(v), 0, 1, f"field {fd.name}")
        elif fd.type == fd.TYPE_MESSAGE:
            if repeated:
                for sub in getattr(msg, fd.name):
                    _check_strings(sub)
            elif msg.HasField(fd.name):
                _check_strings(getattr(msg, fd.name))


def parse_model(raw: bytes, name: str) -> onnx.ModelProto:
    """A ModelProto from serialized bytes; parse failures become one-line :class:`ModelError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = onnx.load_model_from_string(raw)
    except Exception as err:  # DecodeError, RuntimeWarning-as-error, …
        detail = " ".join(str(err).split()) or type(err).__name__
        raise ModelError(f"{name} is not a readable ONNX model: {detail}") from None
    check_model_strings(proto, name)
    return proto


def check_model_strings(proto: onnx.ModelProto, name: str) -> None:
    """Refuse a model without a graph, or with a name or string that is not valid UTF-8."""
    try:
        _check_strings(proto)
    except (UnicodeDecodeError, RecursionError) as err:
        raise ModelError(
            f"{name} is not a valid ONNX model: {type(err).__name__} in a name or "
            "string field (the file is corrupt)"
        ) from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelError(f"{name} is not an ONNX model (no graph found)")


def read_model_bytes(path: str | os.PathLike[str]) -> tuple[bytes, onnx.ModelProto]:
    """The file's bytes and the model parsed from them, external data checked, not loaded."""
    p = Path(path)
    _check_file(p)
    raw = p.read_bytes()
    proto = parse_model(raw, repr(str(p)))
    check_external_data(proto, model_dir(p))
    return raw, proto


def read_model(path: str | os.PathLike[str], *, external_data: bool = False) -> onnx.ModelProto:
    """The one model loader: checks the file, parses it (``.onnx`` protobuf or ``.onnxtxt``
    text), validates every external-data reference, and loads external data when asked."""
    p = Path(path)
    _check_file(p)
    if p.suffix in (".onnxtxt", ".txt"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto = onnx.load(str(p), load_external_data=False)
        except Exception as err:
            detail = " ".join(str(err).split()) or type(err).__name__
            raise ModelError(f"{str(p)!r} is not a readable ONNX model: {detail}") from None
        check_model_strings(proto, repr(str(p)))
    else:
        proto = parse_model(p.read_bytes(), repr(str(p)))
    refs = check_external_data(proto, model_dir(p))
    if external_data and refs:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(model_dir(p)))
        except Exception as err:
            raise ModelError(f"cannot read the external data of {str(p)!r}: {err}") from None
    return proto
