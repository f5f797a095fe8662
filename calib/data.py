"""Data sources: feed dicts for a model from the formats users have.

``open_data_source(source, model_inputs, ...)`` accepts

- an ``.npz`` file with one array per model input, batch on axis 0 (other arrays, e.g.
  ``labels``, are not fed and are available from :meth:`DataSource.extras`);
- a directory of ONNX test-data sets (``test_data_set_*/input_*.pb``, as ORT's tools write);
- ``module:callable`` (or ``path/to/file.py:callable``): the callable is called with no
  arguments and returns an iterable of feed dicts or an object with ORT's
  ``CalibrationDataReader.get_next()``;
- such an iterable or reader object directly (Python API);
- a text file, one sample a line, with ``tokenizer=DIR`` (a Hugging Face tokenizer folder with
  ``tokenizer.json``): produces whichever of ``input_ids`` / ``attention_mask`` /
  ``token_type_ids`` the model declares, padded and truncated to a fixed length (the model's
  fixed sequence length, else ``max_length``, default 128).

Every batch is checked against the model's inputs (names, element types, ranks, fixed dims);
a mismatch raises :class:`~gelu_quant.errors.DataError` naming what the model expects.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from gelu_quant.errors import DataError
from gelu_quant.modelfile import read_model

Feed = dict[str, np.ndarray]
Dim = int | str | None

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_LENGTH = 128
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype name, and shape (ints, symbolic names or None)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}, any shape"
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}] (rank {len(self.shape)})"


def _load_graph(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return read_model(model)


def model_input_specs(model: str | os.PathLike[str] | onnx.ModelProto) -> list[InputSpec]:
    """The inputs a model must be fed (graph inputs that are not initializers)."""
    m = _load_graph(model)
    inits = {t.name for t in m.graph.initializer}
    specs = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            dtype = "unknown"
        shape: tuple[Dim, ...] | None = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            )
        specs.append(InputSpec(vi.name, dtype, shape))
    return specs


class DataSource(Protocol):
    """An iterable of feed dicts that can describe itself."""

    def __iter__(self) -> Iterator[Feed]: ...

    def describe(self) -> dict[str, Any]:
        """``{"source": str, "kind": str, "samples": int, "batches": int}`` (counts of the last
        complete or partial pass)."""
        ...

    def extras(self) -> dict[str, np.ndarray]:
        """Arrays in the source that are not model inputs (e.g. ``labels``); may be empty."""
        ...


# -- checking ----------------------------------------------------------------------------------
def _expected(specs: Sequence[InputSpec]) -> str:
    return "; ".join(s.describe() for s in specs)


def check_feed(feed: Mapping[str, Any], specs: Sequence[InputSpec], where: str) -> Feed:
    """Validate one feed dict against the model inputs; returns it with numpy values.

    Integer and float arrays are cast to the declared dtype when that is lossless for the
    kind (e.g. int32 -> int64); anything else is an error.
    """
    if not isinstance(feed, Mapping):
        raise DataError(
            f"{where}: expected a dict of input name -> array, got {type(feed).__name__}; "
            f"the model expects {_expected(specs)}"
        )
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feed]
    if missing:
        raise DataError(
            f"{where}: missing model input(s) {', '.join(missing)} (got "
            f"{', '.join(map(str, feed)) or 'nothing'}); the model expects {_expected(specs)}"
        )
    out: Feed = {}
    for s in specs:
        a = np.asarray(feed[s.name])
        if s.dtype != "unknown" and a.dtype.name != s.dtype:
            want = np.dtype(s.dtype)
            if (a.dtype.kind in "biu" and want.kind in "iu" and np.can_cast(a.dtype, want)) or (
                a.dtype.kind == "f" and want.kind == "f" and np.can_cast(a.dtype, want)
            ):
                a = a.astype(want)
            else:
                raise DataError(
                    f"{where}: input {s.name!r} has dtype {a.dtype.name}, the model expects "
                    f"{s.dtype}; the model expects {_expected(specs)}"
                )
        if s.shape is not None:
            if a.ndim != len(s.shape):
                raise DataError(
                    f"{where}: input {s.name!r} has rank {a.ndim} (shape {list(a.shape)}), the "
                    f"model expects rank {len(s.shape)}; the model expects {_expected(specs)}"
                )
            for ax, (got, want_d) in enumerate(zip(a.shape, s.shape, strict=True)):
                if isinstance(want_d, int) and want_d > 0 and got != want_d:
                    raise DataError(
                        f"{where}: input {s.name!r} has size {got} on axis {ax}, the model "
                        f"fixes it to {want_d}; the model expects {_expected(specs)}"
                    )
        out[s.name] = a
    return out


def _batch_of(feed: Feed) -> int:
    for a in feed.values():
        if a.ndim:
            return int(a.shape[0])
    return 1


def _default_batch_size(specs: Sequence[InputSpec], batch_size: int | None) -> int:
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0]}
    if batch_size is not None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if fixed and batch_size not in fixed:
            raise DataError(
                f"the model fixes the batch size to {sorted(fixed)[0]}; got --batch-size "
                f"{batch_size}"
            )
        return batch_size
    return next(iter(fixed)) if len(fixed) == 1 else DEFAULT_BATCH_SIZE


class _Counting:
    """Shared bookkeeping: ``describe()`` and ``max_batches``."""

    kind = "?"

    def __init__(self, source: str, max_batches: int | None) -> None:
        if max_batches is not None and max_batches < 1:
            raise DataError(f"max batches must be >= 1, got {max_batches}")
        self._source = source
        self._max_batches = max_batches
        self._samples = 0
        self._batches = 0

    def _feeds(self) -> Iterator[Feed]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Feed]:
        self._samples = self._batches = 0
        for feed in self._feeds():
            if self._max_batches is not None and self._batches >= self._max_batches:
                return
            self._batches += 1
            self._samples += _batch_of(feed)
            yield feed

    def _planned_batches(self) -> int | None:
        return None

    @property
    def num_batches(self) -> int | None:
        """How many batches a pass yields, when known in advance (for progress bars)."""
        n = self._planned_batches()
        if n is None or self._max_batches is None:
            return n
        return min(n, self._max_batches)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self._source,
            "kind": self.kind,
            "samples": self._samples,
            "batches": self._batches,
        }

    def extras(self) -> dict[str, np.ndarray]:
        return {}


def _rebatch(arrays: Iterable[Feed], batch_size: int) -> Iterator[Feed]:
    """Concatenate / split feeds along axis 0 into batches of ``batch_size`` (last may be
    smaller)."""
    pending: list[Feed] = []
    have = 0
    for feed in arrays:
        pending.append(feed)
        have += _batch_of(feed)
        while have >= batch_size:
            joined = {k: np.concatenate([f[k] for f in pending]) for k in pending[0]}
            yield {k: v[:batch_size] for k, v in joined.items()}
            rest = {k: v[batch_size:] for k, v in joined.items()}
            have -= batch_size
            pending = [rest] if have else []
    if have:
        yield {k: np.concatenate([f[k] for f in pending]) for k in pending[0]}


# -- .npz --------------------------------------------------------------------------------------
class NpzSource(_Counting):
    """Arrays in an ``.npz`` file, one per model input, batch on axis 0."""

    kind = "npz"

    def __init__(
        self,
        path: Path,
        specs: Sequence[InputSpec],
        batch_size: int | None,
        max_batches: int | None,
    ) -> None:
        super().__init__(str(path), max_batches)
        self._bs = _default_batch_size(specs, batch_size)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise DataError(f"cannot read {str(path)!r} as .npz: {e}") from None
        names = [s.name for s in specs]
        feed = check_feed(arrays, specs, str(path))
        sizes = {n: (a.shape[0] if a.ndim else None) for n, a in feed.items()}
        distinct = {v for v in sizes.values() if v is not None}
        if len(distinct) > 1:
            raise DataError(
                f"{path}: arrays disagree on the batch axis (axis 0 sizes {sizes}); every input "
                "array must hold the same number of samples"
            )
        self._arrays = feed
        self._extras = {k: v for k, v in arrays.items() if k not in names}
        self._n = distinct.pop() if distinct else 1

    def _planned_batches(self) -> int | None:
        return -(-self._n // self._bs)

    def _feeds(self) -> Iterator[Feed]:
        for i in range(0, self._n, self._bs):
            yield {k: (v[i : i + self._bs] if v.ndim else v) for k, v in self._arrays.items()}

    def extras(self) -> dict[str, np.ndarray]:
        return dict(self._extras)


# -- ONNX test-data sets -----------------------------------------------------------------------
def _read_pb(path: Path) -> onnx.TensorProto:
    t = onnx.TensorProto()
    try:
        t.ParseFromString(path.read_bytes())
    except Exception as e:
        raise DataError(f"cannot read {str(path)!r} as an ONNX TensorProto: {e}") from None
    return t


def _natural_key(p: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


class TestDataSetSource(_Counting):
    """A directory of ``test_data_set_*/input_*.pb`` (one feed per set, re-batched on request)."""

    kind = "onnx-test-data"

    def __init__(
        self,
        path: Path,
        specs: Sequence[InputSpec],
        batch_size: int | None,
        max_batches: int | None,
    ) -> None:
        super().__init__(str(path), max_batches)
        self._sets = sorted(path.glob("test_data_set_*"), key=_natural_key)
        self._sets = [d for d in self._sets if d.is_dir()]
        if not self._sets:
            raise DataError(
                f"{path}: no test_data_set_* folders; expected test_data_set_N/input_M.pb files "
                "as ONNX's and ORT's tools write them"
            )
        self._specs = list(specs)
        self._bs = batch_size

    def _read_set(self, d: Path) -> Feed:
        files = sorted(d.glob("input_*.pb"), key=_natural_key)
        if not files:
            raise DataError(f"{d}: no input_*.pb files")
        feed: Feed = {}
        for i, f in enumerate(files):
            t = _read_pb(f)
            name = t.name
            if not name:
                if i >= len(self._specs):
                    raise DataError(
                        f"{f}: unnamed tensor number {i} but the model has only "
                        f"{len(self._specs)} input(s): {_expected(self._specs)}"
                    )
                name = self._specs[i].name
            feed[name] = numpy_helper.to_array(t)
        return check_feed(feed, self._specs, str(d))

    def _feeds(self) -> Iterator[Feed]:
        feeds = (self._read_set(d) for d in self._sets)
        if self._bs is None:
            yield from feeds
        else:
            yield from _rebatch(feeds, self._bs)


# -- readers and iterables ---------------------------------------------------------------------
class ReaderSource(_Counting):
    """Feed dicts from an iterable, an ORT ``CalibrationDataReader``, or a factory of either."""

    kind = "python"

    def __init__(
        self,
        name: str,
        obj: Any,
        specs: Sequence[InputSpec],
        max_batches: int | None,
        factory: Any = None,
    ) -> None:
        super().__init__(name, max_batches)
        self._obj = obj
        self._factory = factory
        self._specs = list(specs)
        self._passes = 0

    def _fresh(self) -> Any:
        if self._passes and self._factory is not None:
            return _call_factory(self._factory, self._source)
        if self._passes:
            rewind = getattr(self._obj, "rewind", None)
            if callable(rewind):
                rewind()
            elif not hasattr(self._obj, "get_next") and not isinstance(self._obj, Iterator):
                return self._obj  # a re-iterable collection (list, generator function result...)
            else:
                raise DataError(
                    f"{self._source}: the reader was already consumed; pass a module:callable "
                    "that makes a new reader, or give the reader a rewind() method"
                )
        return self._obj

    def _feeds(self) -> Iterator[Feed]:
        obj = self._fresh()
        self._passes += 1
        where = f"{self._source} batch"
        n = 0
        get_next = getattr(obj, "get_next", None)
        if callable(get_next):
            while True:
                feed = get_next()
                if feed is None:
                    return
                yield check_feed(feed, self._specs, f"{where} {n}")
                n += 1
        try:
            it = iter(obj)
        except TypeError:
            raise DataError(
                f"{self._source}: got a {type(obj).__name__}, which is neither iterable nor has "
                "get_next(); return an iterable of feed dicts or a CalibrationDataReader"
            ) from None
        for feed in it:
            yield check_feed(feed, self._specs, f"{where} {n}")
            n += 1


_CALLABLE_RE = re.compile(r"^(?P<mod>[^:]+):(?P<attr>[A-Za-z_][\w.]*)$")


def _import_callable(spec: str) -> Any:
    m = _CALLABLE_RE.match(spec)
    if not m:
        raise DataError(f"{spec!r} is not of the form module:callable")
    mod_name, attr = m["mod"], m["attr"]
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name)
            if not file.is_file():
                raise DataError(f"{spec}: file {mod_name!r} not found")
            uspec = importlib.util.spec_from_file_location(f"_gq_data_{file.stem}", file)
            if uspec is None or uspec.loader is None:
                raise DataError(f"{spec}: cannot import {mod_name!r}")
            module = importlib.util.module_from_spec(uspec)
            uspec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{spec}: cannot import module {mod_name!r}: {e!r}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"{spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"{spec}: {attr!r} is not callable")
    return obj


def _call_factory(factory: Any, name: str) -> Any:
    try:
        return factory()
    except Exception as e:
        raise DataError(f"{name}: calling it with no arguments failed: {e!r}") from None


# -- text + tokenizer --------------------------------------------------------------------------
def _pad_token(tok_dir: Path, tokenizer: Any) -> tuple[int, str]:
    name = "[PAD]"
    cfg = tok_dir / "tokenizer_config.json"
    if cfg.is_file():
        try:
            pad = json.loads(cfg.read_text()).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str):
                name = pad
        except (OSError, ValueError):
            pass
    pid = tokenizer.token_to_id(name)
    return (0 if pid is None else int(pid)), name


class TextSource(_Counting):
    """Lines of a text file tokenized with a Hugging Face ``tokenizer.json``."""

    kind = "text"

    def __init__(
        self,
        path: Path,
        specs: Sequence[InputSpec],
        tokenizer_dir: Path,
        batch_size: int | None,
        max_batches: int | None,
        max_length: int | None,
    ) -> None:
        super().__init__(str(path), max_batches)
        self._specs = list(specs)
        unknown = [s.name for s in specs if s.name not in _TOKEN_INPUTS]
        if unknown or "input_ids" not in [s.name for s in specs]:
            raise DataError(
                f"text data feeds input_ids / attention_mask / token_type_ids, but the model "
                f"expects {_expected(specs)}; use an .npz or a module:callable source instead"
            )
        for s in specs:
            if s.rank not in (None, 2):
                raise DataError(
                    f"text data makes [batch, sequence] arrays but the model's {s.name!r} has "
                    f"rank {s.rank}; the model expects {_expected(specs)}"
                )
        tj = tokenizer_dir / "tokenizer.json"
        if not tj.is_file():
            raise DataError(
                f"tokenizer folder {str(tokenizer_dir)!r} has no tokenizer.json; give the folder "
                "of a Hugging Face fast tokenizer"
            )
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError(
                "text data needs the 'tokenizers' package: pip install tokenizers"
            ) from None
        fixed = {
            s.shape[1] for s in specs if s.shape and isinstance(s.shape[1], int) and s.shape[1] > 0
        }
        if max_length is not None and fixed and max_length not in fixed:
            raise DataError(
                f"the model fixes the sequence length to {min(fixed)}; got {max_length}"
            )
        self._max_length = (
            max_length if max_length is not None else min(fixed) if fixed else DEFAULT_MAX_LENGTH
        )
        try:
            self._tok = Tokenizer.from_file(str(tj))
        except Exception as e:
            raise DataError(f"cannot load {str(tj)!r}: {e}") from None
        pad_id, pad_name = _pad_token(tokenizer_dir, self._tok)
        self._tok.enable_truncation(max_length=self._max_length)
        self._tok.enable_padding(pad_id=pad_id, pad_token=pad_name, length=self._max_length)
        self._bs = _default_batch_size(specs, batch_size)
        self._path = path
        try:
            with path.open(encoding="utf-8") as f:
                self._n = sum(1 for line in f if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read text file {str(path)!r}: {e}") from None
        if self._n == 0:
            raise DataError(f"text file {str(path)!r} has no non-empty lines")

    @property
    def max_length(self) -> int:
        return self._max_length

    def _planned_batches(self) -> int | None:
        return -(-self._n // self._bs)

    def encode(self, lines: Sequence[str]) -> Feed:
        """Tokenize ``lines`` into a feed dict for the model's token inputs."""
        encs = self._tok.encode_batch(list(lines))
        fields = {
            "input_ids": [e.ids for e in encs],
            "attention_mask": [e.attention_mask for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
        }
        feed = {}
        for s in self._specs:
            dt = np.dtype(s.dtype) if s.dtype != "unknown" else np.dtype(np.int64)
            feed[s.name] = np.asarray(fields[s.name], dtype=dt)
        return feed

    def _feeds(self) -> Iterator[Feed]:
        batch: list[str] = []
        with self._path.open(encoding="utf-8") as f:
            for line in f:
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                batch.append(text)
                if len(batch) == self._bs:
                    yield self.encode(batch)
                    batch = []
        if batch:
            yield self.encode(batch)


# -- entry point -------------------------------------------------------------------------------
def open_data_source(
    source: str | os.PathLike[str] | object,
    model_inputs: Sequence[InputSpec],
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    max_length: int | None = None,
) -> DataSource:
    """Open ``source`` as a stream of feed dicts for a model with ``model_inputs``.

    See the module docstring for the accepted sources. ``batch_size`` re-batches file sources
    (default: the model's fixed batch size, else 16; test-data sets keep their own batches unless
    given); Python readers keep their own batches. ``max_batches`` stops early.
    """
    specs = list(model_inputs)
    if not isinstance(source, str | os.PathLike):
        name = f"<{type(source).__name__}>"
        return ReaderSource(name, source, specs, max_batches)
    text = os.fspath(source)
    path = Path(text)
    if tokenizer is not None:
        if not path.is_file():
            raise DataError(f"text file {text!r} not found")
        return TextSource(path, specs, Path(tokenizer), batch_size, max_batches, max_length)
    if path.is_dir():
        return TestDataSetSource(path, specs, batch_size, max_batches)
    if path.is_file():
        if path.suffix == ".npz":
            return NpzSource(path, specs, batch_size, max_batches)
        if path.suffix in (".txt", ".text", ".tsv", ".csv", ".jsonl", ""):
            raise DataError(
                f"{text!r} looks like a text file: give --tokenizer DIR (a folder with "
                "tokenizer.json) to tokenize it"
            )
        raise DataError(
            f"{text!r}: unsupported data file; expected an .npz, a folder of "
            "test_data_set_*/input_*.pb, module:callable, or a text file with --tokenizer"
        )
    if _CALLABLE_RE.match(text):
        factory = _import_callable(text)
        obj = _call_factory(factory, text)
        return ReaderSource(text, obj, specs, max_batches, factory=factory)
    raise DataError(
        f"data source {text!r} not found; expected an .npz file, a folder of "
        "test_data_set_*/input_*.pb, module:callable, or a text file with --tokenizer"
    )
