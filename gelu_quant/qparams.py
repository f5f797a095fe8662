"""Quantization parameters with the exact semantics of ONNX QuantizeLinear / DequantizeLinear.

``quantize`` is ``saturate(round_half_to_even(x / scale) + zero_point)``; ``dequantize`` is
``(q - zero_point) * scale``. The scale is stored as a float32 value (what an ONNX initializer
holds), so numpy and ONNX Runtime start from the same number. Arithmetic happens in the input's
float dtype: float32 inputs are divided in float32, as ORT does; float64 inputs in float64 (the
reference used to build tables).

Low-bit codes (2–7 bits, "int4" tables with 16 entries, say) live in an 8-bit container: the
dtype stays int8/uint8 and ``bits`` narrows the code range to ``[-2**(bits-1), 2**(bits-1) - 1]``
(signed) or ``[0, 2**bits - 1]`` (unsigned); quantization saturates to that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx

from gelu_quant.errors import SpecError

QDType = Literal["int8", "uint8", "int16"]
QDTYPES: tuple[QDType, ...] = ("int8", "uint8", "int16")

_LIMITS: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
}
_NP_DTYPES: dict[str, type[np.integer]] = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16}
_ONNX_TYPES: dict[str, int] = {
    "int8": onnx.TensorProto.INT8,
    "uint8": onnx.TensorProto.UINT8,
    "int16": onnx.TensorProto.INT16,
}


def qlimits(dtype: str, bits: int | None = None) -> tuple[int, int]:
    """Smallest and largest code of an integer quantized dtype, or of ``bits``-bit codes stored
    in it (``bits`` from 2 to the dtype's width; None: the dtype's full width)."""
    try:
        lo, hi = _LIMITS[dtype]
    except KeyError:
        raise SpecError(
            f"unknown quantized dtype {dtype!r}; expected one of {', '.join(QDTYPES)}"
        ) from None
    if bits is None:
        return lo, hi
    width = 16 if dtype == "int16" else 8
    if not (isinstance(bits, int) and 2 <= bits <= width):
        raise SpecError(f"code bits must be an integer within 2..{width} for {dtype}, got {bits!r}")
    if lo < 0:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def qparams_from_ranges(
    lo: npt.NDArray[np.floating],
    hi: npt.NDArray[np.floating],
    dtype: QDType = "int8",
    bits: int | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Scales (float32 values, as float64) and zero points of :meth:`QParams.from_range` for
    each range ``[lo[i], hi[i]]``, computed all at once. Raises SpecError for the first range
    that has none."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    qmin, qmax = qlimits(dtype, bits)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        i = int(np.argmax(bad))
        raise SpecError(f"range [{lo[i]}, {hi[i]}] is not finite")
    bad = ~(lo < hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise SpecError(f"empty range [{lo[i]}, {hi[i]}]: need LO < HI")
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale32 = ((hi - lo) / (qmax - qmin)).astype(np.float32).astype(np.float64)
    bad = ~((scale32 > 0.0) & np.isfinite(scale32))
    if bad.any():
        i = int(np.argmax(bad))
        raise SpecError(f"range [{lo[i]}, {hi[i]}] is too small or too large for float32 scale")
    zps = np.clip(np.rint(qmin - lo / scale32), qmin, qmax).astype(np.int64)
    # Rounding the zero point moves both ends of the grid by at most half a step, so values
    # saturated at either end are still within half a step: no widening needed.
    return scale32, zps


def quantize_linear(
    x: npt.ArrayLike,
    scale: float | npt.NDArray[np.floating],
    zero_point: int | npt.NDArray[np.integer],
    dtype: QDType,
    bits: int | None = None,
) -> npt.NDArray[np.integer]:
    """ONNX QuantizeLinear: ``saturate(round_half_to_even(x / scale) + zero_point)``.

    ``scale`` (float32 values) and ``zero_point`` are scalars or arrays that broadcast against
    ``x`` (one quantizer per row, say). NaN quantizes to the zero point. ``bits`` saturates to
    the code range of that many bits instead of the dtype's (QuantizeLinear then ``Clip``).
    """
    a = np.asarray(x)
    ftype = np.float32 if a.dtype in (np.float16, np.float32) else np.float64
    a = a.astype(ftype)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(a / np.asarray(scale, dtype=ftype))
    r = np.nan_to_num(r, nan=0.0, posinf=np.inf, neginf=-np.inf) + zero_point
    qmin, qmax = qlimits(dtype, bits)
    return np.clip(r, qmin, qmax).astype(_NP_DTYPES[dtype])


def dequantize_linear(
    q: npt.ArrayLike,
    scale: float | npt.NDArray[np.floating],
    zero_point: int | npt.NDArray[np.integer],
    dtype: type[np.floating] = np.float64,
) -> npt.NDArray[np.floating]:
    """ONNX DequantizeLinear ``(q - zero_point) * scale`` in ``dtype`` (broadcasting)."""
    qi = np.asarray(q).astype(np.int64) - zero_point
    out: npt.NDArray[np.floating] = (
        np.asarray(qi).astype(dtype) * np.asarray(scale, dtype=dtype)
    ).astype(dtype)
    return out


@dataclass(frozen=True)
class QParams:
    """Affine quantization parameters: ``real = (code - zero_point) * scale``."""

    scale: float
    zero_point: int
    dtype: QDType
    code_bits: int | None = None
    """Width of the codes when narrower than the dtype (2..7 for int8/uint8: low-bit tables in
    an 8-bit container); None (the default) is the dtype's full width."""

    def __post_init__(self) -> None:
        if self.code_bits is not None and self.code_bits == (16 if self.dtype == "int16" else 8):
            object.__setattr__(self, "code_bits", None)  # one spelling of the full width
        qmin, qmax = qlimits(self.dtype, self.code_bits)
        s32 = float(np.float32(self.scale))
        if not (math.isfinite(s32) and s32 > 0.0):
            raise SpecError(f"scale must be a positive finite float32, got {self.scale!r}")
        if not qmin <= int(self.zero_point) <= qmax:
            raise SpecError(
                f"zero point {self.zero_point} outside [{qmin}, {qmax}] of {self.dtype}"
            )
        object.__setattr__(self, "scale", s32)
        object.__setattr__(self, "zero_point", int(self.zero_point))

    # -- facts -------------------------------------------------------------------------------
    @property
    def qmin(self) -> int:
        return qlimits(self.dtype, self.code_bits)[0]

    @property
    def qmax(self) -> int:
        return qlimits(self.dtype, self.code_bits)[1]

    @property
    def np_dtype(self) -> type[np.integer]:
        return _NP_DTYPES[self.dtype]

    @property
    def onnx_dtype(self) -> int:
        return _ONNX_TYPES[self.dtype]

    @property
    def bits(self) -> int:
        """Width of the codes (``code_bits``, else the dtype's)."""
        if self.code_bits is not None:
            return self.code_bits
        return 16 if self.dtype == "int16" else 8

    def codes(self) -> npt.NDArray[np.integer]:
        """Every code of the dtype, ascending."""
        return np.arange(self.qmin, self.qmax + 1).astype(self.np_dtype)

    @property
    def real_range(self) -> tuple[float, float]:
        """The real values of the smallest and largest code (float64)."""
        return (
            float((self.qmin - self.zero_point) * np.float64(self.scale)),
            float((self.qmax - self.zero_point) * np.float64(self.scale)),
        )

    # -- arithmetic --------------------------------------------------------------------------
    def quantize(self, x: npt.ArrayLike) -> npt.NDArray[np.integer]:
        """ONNX QuantizeLinear: round half to even, add zero point, saturate."""
        return quantize_linear(x, self.scale, self.zero_point, self.dtype, self.code_bits)

    def dequantize(
        self, q: npt.ArrayLike, dtype: type[np.floating] = np.float64
    ) -> npt.NDArray[np.floating]:
        """ONNX DequantizeLinear ``(q - zero_point) * scale`` in ``dtype``."""
        return dequantize_linear(q, self.scale, self.zero_point, dtype)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_range(
        cls, lo: float, hi: float, dtype: QDType = "int8", bits: int | None = None
    ) -> QParams:
        """Asymmetric qparams covering ``[lo, hi]`` (widened to contain 0, as ONNX requires).

        ``scale = (hi - lo) / (qmax - qmin)`` and the zero point is the code of 0, rounded half
        to even and saturated, so 0 is exactly representable. ``bits``: low-bit codes.
        """
        scales, zps = qparams_from_ranges(np.array([lo]), np.array([hi]), dtype, bits)
        return cls(scale=float(scales[0]), zero_point=int(zps[0]), dtype=dtype, code_bits=bits)

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "scale": self.scale,
            "zero_point": self.zero_point,
            "dtype": self.dtype,
        }
        if self.code_bits is not None:
            d["bits"] = self.code_bits
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> QParams:
        try:
            return cls(
                scale=float(d["scale"]),  # type: ignore[arg-type]
                zero_point=int(d["zero_point"]),  # type: ignore[call-overload]
                dtype=d["dtype"],  # type: ignore[arg-type]
                code_bits=None if d.get("bits") is None else int(d["bits"]),  # type: ignore[call-overload]
            )
        except KeyError as e:
            raise SpecError(f"qparams JSON lacks {e.args[0]!r}") from None
