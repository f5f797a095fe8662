"""What the evaluator reads data from: any iterable of feed dicts.

:class:`DataSource` is the protocol (``gelu_quant.calib.data`` sources satisfy it): iterating
yields ``{input name: array}`` batches with the sample axis first; ``describe()`` is optional.
:func:`open_source` resolves a ``--data`` argument through ``gelu_quant.calib.data`` when that
module is installed, else reads a ``.npz`` file of arrays named after the model's inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gelu_quant.errors import BadInputError, DataError

Feed = Mapping[str, np.ndarray]


@runtime_checkable
class DataSource(Protocol):
    """An iterable of feed dicts (batches, axis 0 = samples)."""

    def __iter__(self) -> Iterator[Feed]: ...


def describe(source: Iterable[Feed]) -> str:
    """The source's ``describe()`` text, else its type name."""
    d = getattr(source, "describe", None)
    if not callable(d):
        return type(source).__name__
    text = d()
    if isinstance(text, Mapping):  # gelu_quant.calib.data: {"source", "kind", "samples", ...}
        kind, src = text.get("kind"), text.get("source")
        return " ".join(str(v) for v in (kind, src) if v is not None) or type(source).__name__
    return str(text)


class NpzBatches:
    """Batches of a ``.npz`` file whose arrays are named after the model inputs."""

    def __init__(
        self,
        path: Path,
        input_names: Sequence[str],
        *,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ) -> None:
        if not path.is_file():
            raise BadInputError(f"data file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise BadInputError(f"cannot read {path} as .npz: {e}") from None
        missing = [n for n in input_names if n not in arrays]
        if missing:
            raise DataError(
                f"{path} lacks arrays for model inputs {', '.join(missing)} "
                f"(it has {', '.join(arrays) or 'none'})"
            )
        self.arrays = {n: arrays[n] for n in input_names}
        counts = {n: (a.shape[0] if a.ndim else 1) for n, a in self.arrays.items()}
        if len(set(counts.values())) > 1:
            raise DataError(f"arrays in {path} disagree on the sample count: {counts}")
        self.samples = next(iter(counts.values()), 0)
        self.batch_size = batch_size or self.samples or 1
        if self.batch_size < 1:
            raise BadInputError("batch size must be >= 1")
        self.max_batches = max_batches
        self.path = path

    def __iter__(self) -> Iterator[Feed]:
        for i, start in enumerate(range(0, self.samples, self.batch_size)):
            if self.max_batches is not None and i >= self.max_batches:
                return
            yield {n: a[start : start + self.batch_size] for n, a in self.arrays.items()}

    def describe(self) -> str:
        return f"npz {self.path.name} ({self.samples} samples, batch {self.batch_size})"


def open_source(
    source: str,
    model_path: Path,
    input_names: Sequence[str],
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> Any:
    """A data source for ``--data SOURCE`` (the same sources as ``calibrate``)."""
    try:
        from gelu_quant.calib import data as calib_data
    except ImportError:
        calib_data = None  # type: ignore[assignment]
    if calib_data is not None:
        specs = calib_data.model_input_specs(model_path)
        return calib_data.open_data_source(
            source, specs, batch_size=batch_size, max_batches=max_batches
        )
    path = Path(source)
    if path.suffix.lower() != ".npz":
        raise BadInputError(
            f"--data {source}: only .npz files are readable here (gelu_quant.calib.data, which "
            "reads the other sources, is not installed)"
        )
    return NpzBatches(path, input_names, batch_size=batch_size, max_batches=max_batches)
