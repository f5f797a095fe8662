"""Why a formula body equals its table: GELU spelled in ONNX ops (:func:`gelu_formula_nodes`) and
the scale search (:func:`fit_formula`) under which every input code's float64 GELU lies, with
:data:`GELU_ERROR_MARGIN`, strictly inside its table entry's rounding interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops.body_emit import const
from gelu_quant.numerics import QUICK_ALPHA, gelu

GELU_ERROR_MARGIN = 32.0
"""Float32 GELU error bound assumed for the formula body, in units of ``2⁻²⁴·(|x|+1)``."""


def gelu_formula_nodes(x: str, y: str, form: str, prefix: str = "") -> list[onnx.NodeProto]:
    """GELU of float32 ``x`` as exporters spell it (ORT fuses exact and tanh into its Gelu
    kernel; QuickGELU is ``x * Sigmoid(1.702 x)``)."""
    p = prefix
    if form == "quick":
        return [
            const(f"{p}alpha", QUICK_ALPHA, np.float32),
            helper.make_node("Mul", [x, f"{p}alpha"], [f"{p}z"]),
            helper.make_node("Sigmoid", [f"{p}z"], [f"{p}sig"]),
            helper.make_node("Mul", [x, f"{p}sig"], [y]),
        ]
    if form == "exact":
        return [
            const(f"{p}sqrt2", math.sqrt(2.0), np.float32),
            const(f"{p}one", 1.0, np.float32),
            const(f"{p}half", 0.5, np.float32),
            helper.make_node("Div", [x, f"{p}sqrt2"], [f"{p}scaled"]),
            helper.make_node("Erf", [f"{p}scaled"], [f"{p}erf"]),
            helper.make_node("Add", [f"{p}erf", f"{p}one"], [f"{p}cdf2"]),
            helper.make_node("Mul", [x, f"{p}cdf2"], [f"{p}xcdf2"]),
            helper.make_node("Mul", [f"{p}xcdf2", f"{p}half"], [y]),
        ]
    if form == "tanh":
        return [
            const(f"{p}c3", 0.044715, np.float32),
            const(f"{p}k", math.sqrt(2.0 / math.pi), np.float32),
            const(f"{p}one", 1.0, np.float32),
            const(f"{p}half", 0.5, np.float32),
            helper.make_node("Mul", [x, x], [f"{p}x2"]),
            helper.make_node("Mul", [f"{p}x2", f"{p}c3"], [f"{p}cx2"]),
            helper.make_node("Add", [f"{p}cx2", f"{p}one"], [f"{p}inner1"]),
            helper.make_node("Mul", [x, f"{p}inner1"], [f"{p}inner2"]),
            helper.make_node("Mul", [f"{p}inner2", f"{p}k"], [f"{p}inner"]),
            helper.make_node("Tanh", [f"{p}inner"], [f"{p}tanh"]),
            helper.make_node("Add", [f"{p}tanh", f"{p}one"], [f"{p}cdf2"]),
            helper.make_node("Mul", [x, f"{p}cdf2"], [f"{p}xcdf2"]),
            helper.make_node("Mul", [f"{p}xcdf2", f"{p}half"], [y]),
        ]
    raise SpecError(f"unknown GELU form {form!r}")


@dataclass(frozen=True)
class FormulaFit:
    """Scales for the formula body under which every code provably lands on its table entry."""

    in_scale: float
    out_scale: float | None
    nudged: bool


def dequantize_mul_sub(q: npt.NDArray[Any], scale: float, zero_point: int) -> npt.NDArray[Any]:
    """``float32(q)·s − float32(zp·s)`` in float32, two roundings: the opset < 20 body's input."""
    s32 = np.float32(scale)
    c32 = np.float32(np.float64(zero_point) * np.float64(s32))
    return ((q.astype(np.float32) * s32).astype(np.float32) - c32).astype(np.float32)


def _margin_ok(
    spec: Any, s_in: np.float32, s_out: npt.NDArray[np.float32] | None, mul_sub: bool = False
) -> Any:
    """For each candidate output scale: does every code round to its entry with margin?"""
    qp = spec.in_qparams
    codes = qp.codes().astype(np.int64)
    if mul_sub:
        x = dequantize_mul_sub(codes, float(s_in), qp.zero_point)
    else:
        x = ((codes - qp.zero_point).astype(np.float64) * np.float64(s_in)).astype(np.float32)
    x64 = x.astype(np.float64)
    g = gelu(x64, spec.form)
    err = GELU_ERROR_MARGIN * 2.0**-24 * (np.abs(x64) + 1.0)
    if s_out is None:  # float16 output: Cast rounds to nearest even
        ftype = np.float16 if spec.out_dtype == "float16" else np.float32
        lo, hi = (g - err).astype(ftype), (g + err).astype(ftype)
        return np.array([bool(np.all((lo == hi) & (lo == spec.table)))])
    oq = spec.out_qparams
    so = s_out.astype(np.float64)[:, None]
    v = g[None, :] / so + oq.zero_point
    tol = err[None, :] / so + 4.0 * 2.0**-24 * (np.abs(v) + 1.0)
    a = np.clip(np.rint(v - tol), oq.qmin, oq.qmax)
    b = np.clip(np.rint(v + tol), oq.qmin, oq.qmax)
    t = spec.table.astype(np.float64)[None, :]
    return np.all((a == b) & (a == t), axis=1)


_NUDGES = (0, 1, -1, 2, -2, 3, -3, 5, -5, 8, -8, 13, -13, 20, -20, 30, -30, 50, -50, 80, -80)
"""Relative scale perturbations tried, in parts per million (smallest first)."""


def fit_formula(
    spec: Any, *, max_codes_for_search: int = 256, mul_sub: bool = False
) -> FormulaFit | None:
    """Find input/output scales that make the formula body reproduce ``spec.table``.

    Returns None when no perturbation in :data:`_NUDGES` gives every code its margin.
    """
    s_in0 = np.float32(spec.in_qparams.scale)
    float_out = spec.out_qparams is None
    nudges = _NUDGES if spec.table.size <= max_codes_for_search else (0,)
    out_cands = None
    if not float_out:
        s_out0 = np.float64(spec.out_qparams.scale)
        out_cands = np.array([s_out0 * (1.0 + 1e-6 * e) for e in nudges], dtype=np.float32)
        out_cands[0] = np.float32(spec.out_qparams.scale)
    for d in nudges:
        s_in = np.float32(np.float64(s_in0) * (1.0 + 1e-6 * d)) if d else s_in0
        ok = _margin_ok(spec, s_in, out_cands, mul_sub)
        if ok.any():
            j = int(np.argmax(ok))
            s_out = None if out_cands is None else float(out_cands[j])
            return FormulaFit(float(s_in), s_out, nudged=bool(d or j))
    return None
