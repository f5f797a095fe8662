"""The contract every approximation spec fulfils, and the registry of spec kinds.

A spec holds the numbers (tables, breakpoints, coefficients) and nothing else holds them: its
numpy reference :meth:`GeluApprox.evaluate`, its JSON form, its C header, its error report and its
ONNX function body (``gelu_quant.graph.ops``) are all generated from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.numerics import GeluForm

SCHEMA = "gelu-quant/spec"
SCHEMA_VERSION = 1

_KINDS: dict[str, type[GeluApprox]] = {}
S = TypeVar("S", bound="type[GeluApprox]")


def register_spec(cls: S) -> S:
    """Class decorator: make a spec kind loadable from JSON by its ``kind``."""
    kind = cls.kind
    if kind in _KINDS and _KINDS[kind] is not cls:
        raise SpecError(f"spec kind {kind!r} registered twice")
    _KINDS[kind] = cls
    return cls


def spec_kinds() -> dict[str, type[GeluApprox]]:
    """The registered spec kinds, by name."""
    return dict(_KINDS)


class GeluApprox(ABC):
    """An approximation of GELU that can be evaluated, serialised and put in a graph."""

    kind: ClassVar[str]
    """Name of the kind in JSON and in the custom-op domain (e.g. ``lut``, ``poly``)."""

    form: GeluForm
    """The GELU it approximates (``exact`` or ``tanh``): the ground truth of its error report."""

    @property
    @abstractmethod
    def domain(self) -> tuple[float, float]:
        """The input interval the spec was built for (error reports cover it)."""

    @abstractmethod
    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """Numpy reference: real input values to real output values, exactly as the ONNX op
        computes them (including any quantization and the evaluation dtype)."""

    @abstractmethod
    def payload(self) -> dict[str, Any]:
        """The spec's own fields as JSON-ready values (lists, numbers, strings)."""

    @classmethod
    @abstractmethod
    def from_payload(cls, d: dict[str, Any]) -> GeluApprox:
        """Inverse of :meth:`payload`."""

    @abstractmethod
    def summary(self) -> str:
        """One line for humans: kind, range, dtypes, size."""

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Named arrays to export for edge targets (tables, coefficients). Default: none."""
        return {}

    @property
    def array_bytes(self) -> int:
        """Bytes a device holds for the spec: the sum over :meth:`arrays`."""
        return sum(int(a.nbytes) for a in self.arrays().values())

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON document; ``spec_from_json`` inverts it exactly."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            **self.payload(),
        }


def spec_from_json(d: dict[str, Any]) -> GeluApprox:
    """Load any registered spec from its JSON document."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise SpecError(f"not a gelu-quant spec document (expected schema {SCHEMA!r})")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SpecError(
            f"spec schema version {version!r} is not supported (this gelu-quant reads "
            f"{SCHEMA_VERSION}); regenerate the spec with this version"
        )
    kind = d.get("kind")
    if kind not in _KINDS:
        raise SpecError(f"unknown spec kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    body = {k: v for k, v in d.items() if k not in ("schema", "schema_version", "kind")}
    try:
        return _KINDS[kind].from_payload(body)
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError(f"malformed {kind!r} spec: {e}") from None
