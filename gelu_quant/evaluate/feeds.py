"""What the evaluator reads data from: any iterable of feed dicts.

:class:`DataSource` is the protocol: iterating yields ``{input name: array}`` batches with the
sample axis first; ``describe()`` is optional. The sources of ``gelu_quant.calib.data``
(``open_data_source``: .npz, test-data folders, module:callable, tokenized text) satisfy it, and
so does a plain list of dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

Feed = Mapping[str, np.ndarray]


@runtime_checkable
class DataSource(Protocol):
    """An iterable of feed dicts (batches, axis 0 = samples)."""

    def __iter__(self) -> Iterator[Feed]: ...


def describe(source: Iterable[Feed]) -> str:
    """One line saying what the data is: the source's ``describe()``, else its type name.

    ``gelu_quant.calib.data`` sources describe themselves as a dict (``kind``, ``source``, …);
    that becomes ``"<kind> <source>"``.
    """
    d = getattr(source, "describe", None)
    if not callable(d):
        return type(source).__name__
    text = d()
    if isinstance(text, Mapping):
        kind, src = text.get("kind"), text.get("source")
        return " ".join(str(v) for v in (kind, src) if v is not None) or type(source).__name__
    return str(text)
