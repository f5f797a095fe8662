"""gelu-quant: int8 lookup tables and fp16 polynomials for GELU in ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"

from gelu_quant.errors import (
    BadInputError,
    DataError,
    GateFailed,
    GeluQuantError,
    ModelError,
    SpecError,
)

__all__ = [
    "BadInputError",
    "DataError",
    "GateFailed",
    "GeluQuantError",
    "ModelError",
    "SpecError",
    "__version__",
]
