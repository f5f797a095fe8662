"""Full lookup tables: one output entry per input code.

Entry ``q`` of a table is ``Q_out(gelu(DQ_in(q)))`` computed in float64 (or the float64 GELU
rounded once to float16 / float32 for float outputs). The input and output quantization follow
ONNX QuantizeLinear / DequantizeLinear exactly (see :mod:`gelu_quant.qparams`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.numerics import GELU_FORMS, GeluForm, gelu, gelu_output_range
from gelu_quant.qparams import QDType, QParams

FloatDType = Literal["float16", "float32"]
OutDType = Literal["int8", "uint8", "int16", "float16", "float32"]
OUT_DTYPES: tuple[OutDType, ...] = ("int8", "uint8", "int16", "float16", "float32")
IN_DTYPES: tuple[QDType, ...] = ("int8", "uint8", "int16")
_FLOAT_NP: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}


def gelu_output_qparams(
    in_qparams: QParams, out_dtype: QDType, form: GeluForm, bits: int | None = None
) -> QParams:
    """Output qparams fitted to GELU's actual (asymmetric) output range over every input code.

    GELU's minimum is -0.16997 (at x = -0.7518), so for inputs that reach below that point the
    negative side of the output range is tiny: an asymmetric scale spends almost every code on the
    positive side.
    """
    lo, hi = in_qparams.real_range
    out_lo, out_hi = gelu_output_range(lo, hi, form)
    if not out_lo < out_hi:
        raise SpecError(f"GELU is constant over [{lo}, {hi}]; widen the input range")
    return QParams.from_range(out_lo, out_hi, out_dtype, bits)


@register_spec
@dataclass(frozen=True, eq=False)
class LutSpec(GeluApprox):
    """A table indexed by every code of the input dtype."""

    kind = "lut"

    in_qparams: QParams
    out_dtype: OutDType
    out_qparams: QParams | None
    """Output qparams for integer outputs; None for float16 / float32 outputs."""
    form: GeluForm
    table: npt.NDArray[Any] = field(repr=False)
    """``table[q - in_qparams.qmin]``: output code (or float value) for input code ``q``."""

    def __post_init__(self) -> None:
        n = self.in_qparams.qmax - self.in_qparams.qmin + 1
        if self.table.shape != (n,):
            raise SpecError(f"table has shape {self.table.shape}, expected ({n},)")
        if self.out_dtype in _FLOAT_NP:
            if self.out_qparams is not None:
                raise SpecError("float-output tables take no output qparams")
            want: type[np.generic] = _FLOAT_NP[self.out_dtype]
        else:
            if self.out_qparams is None or self.out_qparams.dtype != self.out_dtype:
                raise SpecError(f"{self.out_dtype} output needs {self.out_dtype} output qparams")
            want = self.out_qparams.np_dtype
        if self.table.dtype != want:
            raise SpecError(f"table dtype {self.table.dtype} does not match {self.out_dtype}")
        self.table.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LutSpec)
            and self.in_qparams == other.in_qparams
            and self.out_dtype == other.out_dtype
            and self.out_qparams == other.out_qparams
            and self.form == other.form
            and np.array_equal(self.table, other.table)
            and self.table.dtype == other.table.dtype
        )

    __hash__ = None  # type: ignore[assignment]

    # -- semantics ---------------------------------------------------------------------------
    @property
    def domain(self) -> tuple[float, float]:
        return self.in_qparams.real_range

    @property
    def is_float_out(self) -> bool:
        return self.out_dtype in _FLOAT_NP

    def lookup(self, codes: npt.ArrayLike) -> npt.NDArray[Any]:
        """The op itself: input codes to output codes (or float outputs)."""
        q = np.asarray(codes)
        if q.dtype != self.in_qparams.np_dtype:
            raise SpecError(f"input codes must be {self.in_qparams.dtype}, got {q.dtype}")
        return cast(npt.NDArray[Any], self.table[q.astype(np.int64) - self.in_qparams.qmin])

    def output_values(self) -> npt.NDArray[np.float64]:
        """Real value of every table entry (dequantized), float64."""
        if self.out_qparams is None:
            return self.table.astype(np.float64)
        return self.out_qparams.dequantize(self.table, np.float64).astype(np.float64)

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """QuantizeLinear -> table -> DequantizeLinear (float path of the graph)."""
        codes = self.in_qparams.quantize(x)
        out = self.lookup(codes)
        if self.out_qparams is None:
            return cast(npt.NDArray[np.floating], out)
        return self.out_qparams.dequantize(out, np.float32)

    # -- serialisation -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "in_qparams": self.in_qparams.to_json(),
            "out_dtype": self.out_dtype,
            "out_qparams": None if self.out_qparams is None else self.out_qparams.to_json(),
            "table": [float(v) if self.is_float_out else int(v) for v in self.table],
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> LutSpec:
        out_dtype: OutDType = d["out_dtype"]
        out_qp = None if d["out_qparams"] is None else QParams.from_json(d["out_qparams"])
        np_dtype: type[np.generic] = (
            _FLOAT_NP[out_dtype]
            if out_dtype in _FLOAT_NP
            else QParams.from_json(d["out_qparams"]).np_dtype
        )
        table = np.array(d["table"], dtype=np.float64 if out_dtype in _FLOAT_NP else np.int64)
        return cls(
            in_qparams=QParams.from_json(d["in_qparams"]),
            out_dtype=out_dtype,
            out_qparams=out_qp,
            form=d["form"],
            table=table.astype(np_dtype),
        )

    def summary(self) -> str:
        lo, hi = self.domain
        out: str = self.out_dtype
        if self.out_qparams is not None:
            olo, ohi = self.out_qparams.real_range
            out += f" [{olo:.6g}, {ohi:.6g}] scale={self.out_qparams.scale:.6g}"
        return (
            f"lut: {self.form} GELU, {self.in_qparams.dtype} in [{lo:.6g}, {hi:.6g}] "
            f"scale={self.in_qparams.scale:.6g} zp={self.in_qparams.zero_point} -> {out}, "
            f"{self.table.size} entries"
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {"table": self.table}


def build_lut(
    *,
    in_range: tuple[float, float] | None = None,
    in_qparams: QParams | None = None,
    in_dtype: QDType = "int8",
    out_dtype: OutDType = "int8",
    out_qparams: QParams | None = None,
    form: GeluForm = "exact",
    in_bits: int | None = None,
    out_bits: int | None = None,
) -> LutSpec:
    """Build the table for an input range (or given input qparams).

    Output qparams default to GELU's output range over the input codes
    (:func:`gelu_output_qparams`). Entries are ``Q_out(gelu(DQ_in(q)))`` in float64.
    ``in_bits`` / ``out_bits`` (2..8, with ``in_range`` / default output qparams): low-bit codes
    in the 8-bit container (``in_bits=4``: a 16-entry table); given qparams carry their own.
    """
    if form not in GELU_FORMS:
        raise SpecError(f"unknown GELU form {form!r}; expected one of {', '.join(GELU_FORMS)}")
    if out_dtype not in OUT_DTYPES:
        raise SpecError(f"unknown output dtype {out_dtype!r}; expected one of {OUT_DTYPES}")
    if in_qparams is None:
        if in_range is None:
            raise SpecError("give an input range or input qparams")
        if in_dtype not in IN_DTYPES:
            raise SpecError(f"unknown input dtype {in_dtype!r}; expected one of {IN_DTYPES}")
        in_qparams = QParams.from_range(float(in_range[0]), float(in_range[1]), in_dtype, in_bits)
    elif in_range is not None:
        raise SpecError("give an input range or input qparams, not both")
    elif in_bits is not None and in_bits != in_qparams.bits:
        raise SpecError(f"in_bits={in_bits} but the input qparams have {in_qparams.bits} bits")
    x = in_qparams.dequantize(in_qparams.codes(), np.float64)
    y = gelu(x, form)
    if out_dtype in _FLOAT_NP:
        if out_qparams is not None:
            raise SpecError(f"{out_dtype} output takes no output qparams")
        table: npt.NDArray[Any] = y.astype(_FLOAT_NP[out_dtype])
    else:
        qd = cast(QDType, out_dtype)
        if out_qparams is None:
            out_qparams = gelu_output_qparams(in_qparams, qd, form, out_bits)
        elif out_bits is not None and out_bits != out_qparams.bits:
            raise SpecError(f"out_bits={out_bits} but the output qparams have {out_qparams.bits}")
        elif out_qparams.dtype != out_dtype:
            raise SpecError(f"output qparams are {out_qparams.dtype}, output dtype {out_dtype}")
        table = out_qparams.quantize(y)
    return LutSpec(
        in_qparams=in_qparams, out_dtype=out_dtype, out_qparams=out_qparams, form=form, table=table
    )
