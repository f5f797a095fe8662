"""One exception family for gelu-quant.

Every error says what was wrong and what to do about it. The CLI turns
:class:`GeluQuantError` (and subclasses) into a one-line message and exit code 2;
:class:`GateFailed` is the one exception that means exit code 1.
"""

from __future__ import annotations


class GeluQuantError(Exception):
    """Base class: bad input or an impossible request. CLI exit code 2."""

    exit_code = 2


class BadInputError(GeluQuantError):
    """A user-supplied argument, file or model is not usable as given."""


class SpecError(GeluQuantError):
    """An approximation spec is inconsistent or cannot be built for the request."""


class ModelError(GeluQuantError):
    """An ONNX model cannot be read, matched or rewritten as asked."""


class DataError(GeluQuantError):
    """A data source does not fit the model (names, dtypes, ranks) or cannot be read."""


class GateFailed(GeluQuantError):
    """The accuracy gate failed: not bad input, but a verdict. CLI exit code 1."""

    exit_code = 1
