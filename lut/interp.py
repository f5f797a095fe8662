"""Interpolated small tables: N + 1 knots with linear interpolation between them.

Hardware with small lookup units (16 to 128 entries) splits an 8-bit input code into a segment
index (high bits) and a fraction (low bits). With ``u = q - qmin`` in ``[0, 255]``, ``N`` segments
and ``s = log2(256 / N)`` fraction bits::

    k = u >> s,  f = u & (2**s - 1)
    y = floor((knot[k] * 2**s + (knot[k + 1] - knot[k]) * f + 2**(s - 1)) / 2**s)
    y = clip(y, out.qmin, out.qmax)

all in int32 (round half up). ``knot[k]`` is the output code of GELU at input code
``qmin + k * 2**s``; the last knot sits one code past ``qmax`` (a virtual code, computed the same
way), so every real code lies inside a segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.lut.table import gelu_output_qparams
from gelu_quant.numerics import GELU_FORMS, GeluForm, gelu
from gelu_quant.qparams import QDType, QParams

INTERP_SIZES = (16, 32, 64, 128)


@register_spec
@dataclass(frozen=True, eq=False)
class InterpLutSpec(GeluApprox):
    """An N-segment table over an 8-bit input with linear interpolation in integer arithmetic."""

    kind = "interp_lut"

    in_qparams: QParams
    out_qparams: QParams
    form: GeluForm
    knots: npt.NDArray[np.int32] = field(repr=False)
    """N + 1 output codes (int32), at input codes ``qmin + k * 256 / N``."""

    def __post_init__(self) -> None:
        if self.in_qparams.bits != 8:
            raise SpecError("interpolated tables take int8 or uint8 input")
        if self.segments not in INTERP_SIZES:
            raise SpecError(f"{self.knots.size} knots: need N + 1 with N in {INTERP_SIZES}")
        if self.knots.dtype != np.int32:
            raise SpecError("knots must be int32")
        self.knots.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, InterpLutSpec)
            and self.in_qparams == other.in_qparams
            and self.out_qparams == other.out_qparams
            and self.form == other.form
            and np.array_equal(self.knots, other.knots)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def segments(self) -> int:
        return int(self.knots.size - 1)

    @property
    def shift(self) -> int:
        """Fraction bits ``s``: each segment spans ``2**s`` input codes."""
        return int(np.log2(256 // self.segments))

    @property
    def domain(self) -> tuple[float, float]:
        return self.in_qparams.real_range

    def lookup(self, codes: npt.ArrayLike) -> npt.NDArray[Any]:
        """Input codes to output codes, exactly as the module docstring states."""
        q = np.asarray(codes)
        if q.dtype != self.in_qparams.np_dtype:
            raise SpecError(f"input codes must be {self.in_qparams.dtype}, got {q.dtype}")
        s = self.shift
        u = q.astype(np.int32) - np.int32(self.in_qparams.qmin)
        k = u >> s
        f = u & np.int32((1 << s) - 1)
        lo, hi = self.knots[k], self.knots[k + 1]
        num = lo * np.int32(1 << s) + (hi - lo) * f + np.int32(1 << (s - 1) if s else 0)
        y = np.floor_divide(num, np.int32(1 << s))
        y = np.clip(y, self.out_qparams.qmin, self.out_qparams.qmax)
        return cast(npt.NDArray[Any], y.astype(self.out_qparams.np_dtype))

    def full_table(self) -> npt.NDArray[Any]:
        """The equivalent 256-entry table (output code of every input code, ascending)."""
        return self.lookup(self.in_qparams.codes())

    def output_values(self) -> npt.NDArray[np.float64]:
        """Real value of the output for every input code, float64."""
        return self.out_qparams.dequantize(self.full_table(), np.float64).astype(np.float64)

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        codes = self.in_qparams.quantize(x)
        return self.out_qparams.dequantize(self.lookup(codes), np.float32)

    def payload(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "in_qparams": self.in_qparams.to_json(),
            "out_qparams": self.out_qparams.to_json(),
            "knots": [int(v) for v in self.knots],
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> InterpLutSpec:
        return cls(
            in_qparams=QParams.from_json(d["in_qparams"]),
            out_qparams=QParams.from_json(d["out_qparams"]),
            form=d["form"],
            knots=np.array(d["knots"], dtype=np.int32),
        )

    def summary(self) -> str:
        lo, hi = self.domain
        olo, ohi = self.out_qparams.real_range
        return (
            f"interp_lut: {self.form} GELU, {self.in_qparams.dtype} in [{lo:.6g}, {hi:.6g}] -> "
            f"{self.out_qparams.dtype} [{olo:.6g}, {ohi:.6g}], {self.segments} segments "
            f"({self.segments + 1} knots, {self.shift} fraction bits)"
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {"knots": self.knots}


def build_interp_lut(
    *,
    segments: int,
    in_range: tuple[float, float] | None = None,
    in_qparams: QParams | None = None,
    in_dtype: QDType = "int8",
    out_dtype: QDType = "int8",
    out_qparams: QParams | None = None,
    form: GeluForm = "exact",
) -> InterpLutSpec:
    """Build an N-segment interpolated table; knots are GELU's output codes at segment ends."""
    if segments not in INTERP_SIZES:
        raise SpecError(f"segments must be one of {INTERP_SIZES}, got {segments}")
    if form not in GELU_FORMS:
        raise SpecError(f"unknown GELU form {form!r}; expected one of {', '.join(GELU_FORMS)}")
    if in_qparams is None:
        if in_range is None:
            raise SpecError("give an input range or input qparams")
        if in_dtype not in ("int8", "uint8"):
            raise SpecError(f"interpolated tables take int8 or uint8 input, not {in_dtype!r}")
        in_qparams = QParams.from_range(float(in_range[0]), float(in_range[1]), in_dtype)
    if out_qparams is None:
        out_qparams = gelu_output_qparams(in_qparams, out_dtype, form)
    step = 256 // segments
    knot_codes = in_qparams.qmin + step * np.arange(segments + 1, dtype=np.int64)
    x = (knot_codes - in_qparams.zero_point).astype(np.float64) * np.float64(in_qparams.scale)
    y = out_qparams.quantize(gelu(x, form)).astype(np.int32)
    return InterpLutSpec(in_qparams=in_qparams, out_qparams=out_qparams, form=form, knots=y)
