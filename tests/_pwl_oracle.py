"""Oracles for the PWL tables, written from the docstring of ``gelu_quant.lut.pwl`` with Python
integers and ``math`` (no code of the package under test):

* :func:`pwl_codes`: the integer interpolation, code by code, from a spec's JSON payload;
* :func:`full_table`: the 256-entry (or 65536-entry) table ``Q_out(GELU(DQ_in(q)))`` in float64.
"""

from __future__ import annotations

import math
from typing import Any

INT32 = (-(2**31), 2**31 - 1)
QLIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def gelu64(x: float, form: str) -> float:
    if form == "exact":
        return 0.5 * x * math.erfc(-x / math.sqrt(2.0))
    if form == "tanh":
        return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if form == "quick":
        z = 1.702 * x
        return x / (1.0 + math.exp(-z)) if z > -700 else 0.0
    raise ValueError(form)


def pwl_codes(payload: dict[str, Any], codes: list[int] | range) -> list[int]:
    """Output codes for ``codes`` by the spec's stated arithmetic; asserts the int32 bounds."""
    starts, bases, slopes = payload["starts"], payload["bases"], payload["slopes"]
    shift = payload["shift"]
    lo, hi = QLIMITS[payload["out_qparams"]["dtype"]]
    out = []
    for q in codes:
        k = max(i for i, s in enumerate(starts) if s <= q)
        d = q - starts[k]
        prod = d * slopes[k]
        acc = bases[k] + prod
        for v in (bases[k], prod, acc):
            assert INT32[0] <= v <= INT32[1], "int32 overflow"
        y = acc >> shift  # Python's >> floors
        out.append(min(hi, max(lo, y)))
    return out


def full_table(in_qp: dict[str, Any], out_qp: dict[str, Any], form: str) -> list[int]:
    """``Q_out(GELU(DQ_in(q)))`` for every input code, float64, round half to even (qparams as
    their JSON documents: float32 scales)."""
    qmin, qmax = QLIMITS[in_qp["dtype"]]
    lo, hi = QLIMITS[out_qp["dtype"]]
    s_in, z_in = float(in_qp["scale"]), int(in_qp["zero_point"])
    s_out, z_out = float(out_qp["scale"]), int(out_qp["zero_point"])
    table = []
    for q in range(qmin, qmax + 1):
        g = gelu64((q - z_in) * s_in, form)
        table.append(min(hi, max(lo, round(g / s_out) + z_out)))  # round: half to even
    return table
