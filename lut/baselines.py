"""Baselines to compare the tables and polynomials against, as specs like any other.

* :class:`TanhGeluSpec` -- the tanh formula ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
  evaluated in a float dtype, scored against the *exact* GELU (its report shows the tanh-vs-erf
  error plus the arithmetic's);
* :class:`QuickGeluSpec` -- QuickGELU ``x sigmoid(1.702 x)`` in a float dtype, scored against
  the exact GELU;
* :class:`IGeluSpec` -- I-BERT's integer-only i-GELU (Kim et al., "I-BERT: Integer-only BERT
  Quantization", ICML 2021, Algorithms 1-2): a second-order polynomial for erf on an integer
  input with its scale, in int32 arithmetic.

All take ``io_dtype`` inputs (cast first) and return ``io_dtype`` outputs, so float16 variants
are scored in float16 ulps like :class:`gelu_quant.lut.poly.PolySpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.numerics import GeluForm
from gelu_quant.qparams import QParams

FloatDType = Literal["float16", "float32"]
_NP: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}

#: I-BERT's erf polynomial: erf(x) ~ sign(x) [a (min(|x|, -b) + b)^2 + 1].
IGELU_A = -0.2888
IGELU_B = -1.769
_INT32_MAX = 2**31 - 1


def _check_range(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise SpecError(f"empty or non-finite range [{lo}, {hi}]: need finite LO < HI")


def _check_dtype(name: str, v: str) -> None:
    if v not in _NP:
        raise SpecError(f"unknown {name} {v!r}; expected float16 or float32")


@dataclass(frozen=True)
class _FloatFormula(GeluApprox):
    """A closed-form GELU evaluated op by op in ``compute_dtype``."""

    lo: float
    hi: float
    io_dtype: FloatDType = "float16"
    compute_dtype: FloatDType = "float16"
    form: GeluForm = "exact"

    label: ClassVar[str] = ""
    forms: ClassVar[tuple[str, ...]] = ("exact",)
    """Forms it may be scored against (the QuickGELU formula: exact GELU, or QuickGELU itself
    when it replaces a QuickGELU site)."""

    def __post_init__(self) -> None:
        _check_range(self.lo, self.hi)
        _check_dtype("io dtype", self.io_dtype)
        _check_dtype("compute dtype", self.compute_dtype)
        if self.form not in self.forms:
            raise SpecError(
                f"{self.kind} is scored against form {' or '.join(self.forms)}, not {self.form!r}"
            )
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))

    @property
    def domain(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    @property
    def ulp_dtype(self) -> str:
        """The io dtype (float16: scored in ulps on every float16 input)."""
        return self.io_dtype

    def _formula(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        raise NotImplementedError

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        io, cp = _NP[self.io_dtype], _NP[self.compute_dtype]
        with np.errstate(all="ignore"):
            xc = np.asarray(x).astype(io).astype(cp)
            return self._formula(xc).astype(io)

    def payload(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "lo": self.lo,
            "hi": self.hi,
            "io_dtype": self.io_dtype,
            "compute_dtype": self.compute_dtype,
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> GeluApprox:
        return cls(
            lo=float(d["lo"]),
            hi=float(d["hi"]),
            io_dtype=d["io_dtype"],
            compute_dtype=d["compute_dtype"],
            form=d["form"],
        )

    def summary(self) -> str:
        return (
            f"{self.kind}: {self.label}, {self.io_dtype} in/out, {self.compute_dtype} arithmetic, "
            f"scored against {self.form} GELU on [{self.lo:.6g}, {self.hi:.6g}]"
        )


@register_spec
@dataclass(frozen=True)
class TanhGeluSpec(_FloatFormula):
    """The tanh formula, each operation rounded to ``compute_dtype``:

    ``x3 = (x*x)*x; v = x + 0.044715*x3; w = sqrt(2/pi)*v; s = 1 + tanh(w); y = (0.5*x)*s``
    with the constants rounded to ``compute_dtype``. ``tanh(w)`` is computed in float64 and
    rounded once to ``compute_dtype``: correctly rounded for every float16 ``w``
    (``tests/test_baselines.py`` checks all of them) and for float32 ``w`` unless tanh lies
    within a float64 ulp of a float32 rounding midpoint. Runtimes use their own float32 tanh
    (ORT's kernel is off by a few float32 ulps): this is the reference formula, not a bit-exact
    model of a particular runtime.
    """

    kind = "tanh-formula"
    label: ClassVar[str] = "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"

    def _formula(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        c = x.dtype.type
        x3 = ((x * x).astype(c) * x).astype(c)
        v = (x + (c(0.044715) * x3).astype(c)).astype(c)
        w = (c(math.sqrt(2.0 / math.pi)) * v).astype(c)
        s = (c(1.0) + np.tanh(w.astype(np.float64)).astype(c)).astype(c)
        return cast(npt.NDArray[np.floating], ((c(0.5) * x).astype(c) * s).astype(c))


@register_spec
@dataclass(frozen=True)
class QuickGeluSpec(_FloatFormula):
    """QuickGELU, each operation rounded to ``compute_dtype``:

    ``z = 1.702*x; e = exp(-z); s = 1 / (1 + e); y = x*s`` (1.702 rounded to ``compute_dtype``).
    ``exp(-z)`` is computed in float64 and rounded once to ``compute_dtype``: correctly rounded
    for every float16 ``z`` (``tests/test_baselines.py`` checks all of them) and for float32
    ``z`` unless exp lies within a float64 ulp of a float32 rounding midpoint. (numpy's own
    float16 and float32 exp are not correctly rounded.) Runtimes use their own float32 exp: this
    is the reference formula, not a bit-exact model of a particular runtime.
    """

    kind = "quick-gelu"
    label: ClassVar[str] = "x sigmoid(1.702 x)"
    forms: ClassVar[tuple[str, ...]] = ("exact", "quick")

    def _formula(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        c = x.dtype.type
        z = (c(1.702) * x).astype(c)
        e = np.exp(-z.astype(np.float64)).astype(c)
        s = (c(1.0) / (c(1.0) + e).astype(c)).astype(c)
        return cast(npt.NDArray[np.floating], (x * s).astype(c))


# -- I-BERT i-GELU --------------------------------------------------------------------------
@dataclass(frozen=True)
class IGeluConstants:
    """The integer constants of i-GELU for an input scale ``S`` (all float64 arithmetic).

    ``S_e = S / sqrt(2)`` (erf is evaluated at ``x / sqrt(2)``), ``q_b = floor(b / S_e)``,
    ``q_c = floor(1 / (a S_e^2))`` (I-POLY with c = 1: ``floor(c / (a S^2))``),
    ``S_erf = a S_e^2 2^n``, ``q_1 = floor(1 / S_erf)``, ``S_out = S S_erf / 2``.
    """

    scale: float
    q_b: int
    q_c: int
    shift_bits: int
    s_erf: float
    q_1: int
    s_out: float

    @classmethod
    def of(cls, scale: float, shift_bits: int) -> IGeluConstants:
        s_e = scale / math.sqrt(2.0)
        q_b = math.floor(IGELU_B / s_e)
        q_c = math.floor(1.0 / (IGELU_A * s_e * s_e))
        s_erf = IGELU_A * s_e * s_e * 2.0**shift_bits
        q_1 = math.floor(1.0 / s_erf)
        return cls(scale, q_b, q_c, shift_bits, s_erf, q_1, scale * s_erf / 2.0)


def igelu_int(q: npt.NDArray[np.int64], k: IGeluConstants) -> tuple[npt.NDArray[np.int64], int]:
    """i-GELU on integer codes: output codes (scale ``k.s_out``) and the largest magnitude of
    any intermediate value (must fit int32).

    i-ERF: ``q_abs = min(|q|, -q_b)``, ``q_L = (q_abs + q_b)^2 + q_c``,
    ``q_erf = floor(sign(q) q_L / 2^n)``; i-GELU: ``q_out = q (q_erf + q_1)``. The shift by
    ``n`` (I-BERT's code uses 14) keeps the last product in int32 for fine input scales; the
    paper's algorithm is ``n = 0``.
    """
    q = q.astype(np.int64)
    q_abs = np.minimum(np.abs(q), -k.q_b)
    base = q_abs + k.q_b
    sq = base * base
    q_l = sq + k.q_c
    signed = np.sign(q) * q_l
    q_erf = np.floor_divide(signed, 2**k.shift_bits)  # floor, also for negative values
    inner = q_erf + k.q_1
    q_out = q * inner
    steps = (q, base, sq, q_l, signed, q_erf, inner, q_out)
    peak = max(int(np.max(np.abs(s))) if s.size else 0 for s in steps)
    return q_out, peak


@register_spec
@dataclass(frozen=True)
class IGeluSpec(GeluApprox):
    """I-BERT's integer-only GELU on a symmetric integer input.

    The op: ``q = QuantizeLinear(float32(x), S, 0)`` to ``int{in_bits}`` with
    ``S = float32(max(|lo|, |hi|) / (2^(in_bits-1) - 1))``; :func:`igelu_int` in int32; output
    ``Cast(float32(q_out * S_out), io_dtype)`` (the product in float64, rounded once).
    ``shift_bits`` defaults to the smallest shift that keeps every intermediate in int32 for
    every input code (0 for int8 inputs, as in the paper).
    """

    kind = "i-gelu"

    lo: float
    hi: float
    in_bits: int = 8
    shift_bits: int | None = None
    io_dtype: FloatDType = "float32"
    form: GeluForm = "exact"

    def __post_init__(self) -> None:
        _check_range(self.lo, self.hi)
        _check_dtype("io dtype", self.io_dtype)
        if self.in_bits not in (8, 16):
            raise SpecError(f"i-GELU input bits must be 8 or 16, got {self.in_bits!r}")
        if self.form != "exact":
            raise SpecError("i-GELU approximates the exact GELU (form 'exact')")
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        codes = self.qparams.codes().astype(np.int64)
        if self.shift_bits is None:
            for n in range(0, 31):
                if igelu_int(codes, IGeluConstants.of(self.qparams.scale, n))[1] <= _INT32_MAX:
                    object.__setattr__(self, "shift_bits", n)
                    break
            else:
                raise SpecError(
                    f"i-GELU overflows int32 before any shift for int{self.in_bits} input on "
                    f"[{self.lo}, {self.hi}] (the scale is too fine: q_c = floor(1/(a S^2)) "
                    "is too large); use 8-bit input or a wider range"
                )
        elif not (isinstance(self.shift_bits, int) and 0 <= self.shift_bits <= 30):
            raise SpecError(f"shift_bits must be 0..30, got {self.shift_bits!r}")
        peak = igelu_int(codes, self.constants)[1]
        if peak > _INT32_MAX:
            raise SpecError(
                f"i-GELU overflows int32 (peak {peak}) with shift {self.shift_bits}; "
                "use a larger shift or leave it unset"
            )

    @property
    def qparams(self) -> QParams:
        """Symmetric input qparams (zero point 0)."""
        qmax = 2 ** (self.in_bits - 1) - 1
        scale = max(abs(self.lo), abs(self.hi)) / qmax
        return QParams(scale=scale, zero_point=0, dtype="int8" if self.in_bits == 8 else "int16")

    @property
    def constants(self) -> IGeluConstants:
        assert self.shift_bits is not None
        return IGeluConstants.of(self.qparams.scale, self.shift_bits)

    @property
    def domain(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    @property
    def ulp_dtype(self) -> str:
        """The io dtype (float16: scored in ulps on every float16 input)."""
        return self.io_dtype

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        io = _NP[self.io_dtype]
        with np.errstate(all="ignore"):
            xi = np.asarray(x).astype(io)
            q = self.qparams.quantize(xi.astype(np.float32)).astype(np.int64)
            k = self.constants
            q_out, _ = igelu_int(q, k)
            y = (q_out.astype(np.float64) * k.s_out).astype(np.float32).astype(io)
            y = np.where(np.isnan(xi), xi, y)
        return cast(npt.NDArray[np.floating], y.astype(io))

    def payload(self) -> dict[str, Any]:
        k = self.constants
        return {
            "form": self.form,
            "lo": self.lo,
            "hi": self.hi,
            "in_bits": self.in_bits,
            "shift_bits": self.shift_bits,
            "io_dtype": self.io_dtype,
            "scale": k.scale,
            "q_b": k.q_b,
            "q_c": k.q_c,
            "q_1": k.q_1,
            "s_out": k.s_out,
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> IGeluSpec:
        spec = cls(
            lo=float(d["lo"]),
            hi=float(d["hi"]),
            in_bits=int(d["in_bits"]),
            shift_bits=int(d["shift_bits"]),
            io_dtype=d["io_dtype"],
            form=d["form"],
        )
        mine = spec.payload()
        for key in ("scale", "q_b", "q_c", "q_1", "s_out"):
            if key in d and d[key] != mine[key]:
                raise SpecError(f"i-GELU constant {key}={d[key]!r} disagrees with its inputs")
        return spec

    def summary(self) -> str:
        k = self.constants
        return (
            f"i-gelu: I-BERT integer GELU, int{self.in_bits} in (scale {k.scale:.6g}) on "
            f"[{self.lo:.6g}, {self.hi:.6g}], q_b={k.q_b} q_c={k.q_c} q_1={k.q_1} "
            f"shift={k.shift_bits}, {self.io_dtype} out"
        )
