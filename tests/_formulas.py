"""The float baselines' op sequences (``TanhGeluSpec``, ``QuickGeluSpec``), written here from
their docstrings, with the one transcendental of each (``tanh(w)``, ``exp(-z)``) replaceable by
a neighbour of its correctly rounded value.

Runtimes compute every IEEE operation of these sequences exactly (each rounded once to the
compute dtype) but take tanh and exp from their own kernels, which are not correctly rounded
and change between releases. So a body is checked exactly *up to its transcendental*: every
output must be the sequence's result for some transcendental value within ``k`` ulps of the
correctly rounded one. Distances of the outputs themselves would be a poor bound: one ulp of
``exp`` becomes up to 7 float16 ulps of QuickGELU (through ``1 + e`` and ``1 / t``), and one
ulp of ``tanh`` near -1 becomes thousands of ulps of the tanh formula (``1 + tanh`` cancels).

ORT's graph optimizer also rewrites QuickGELU's float32 ``Mul(x, Div(1, t))`` into ``Div(x, t)``
(one rounding fewer; measured with ORT 1.32, and the float16 body's casts prevent it), so ORT
outputs are also accepted as that sequence (``x_over_t``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from _ulp import step_ulps, ulp_distance

#: How far (in ulps of the compute dtype) a runtime's transcendental may be from the correctly
#: rounded value. float16 bodies compute tanh/exp in float32 and ``Cast`` to float16: a float32
#: kernel good to a few float32 ulps gives the correctly rounded float16 value or a neighbour,
#: so 1. float32 bodies use the runtime's float32 kernels: measured at most 4 ulps (ORT 1.32's
#: Tanh; its Exp 1, numpy 2.4's float32 exp 2 and tanh 1, which onnx.reference uses), doubled.
TRANSCENDENTAL_ULPS = {"float16": 1, "float32": 8}


def op_sequence(
    which: str, x: npt.ArrayLike, io: str, cp: str, shift: int = 0, x_over_t: bool = False
) -> npt.NDArray[np.floating[Any]]:
    """The baseline ``which`` ("tanh" or "quick") on ``x`` with ``io`` in/out and ``cp``
    arithmetic, its transcendental (float64, rounded once to ``cp``) moved by ``shift`` ulps;
    with ``x_over_t`` QuickGELU's ``x * (1 / t)`` is computed as ``x / t``."""
    c = np.dtype(cp).type
    with np.errstate(all="ignore"):
        v = np.asarray(x).astype(io).astype(c)
        if which == "tanh":
            x3 = ((v * v).astype(c) * v).astype(c)
            u = (v + (c(0.044715) * x3).astype(c)).astype(c)
            w = (c(math.sqrt(2.0 / math.pi)) * u).astype(c)
            t = step_ulps(np.tanh(w.astype(np.float64)).astype(c), shift)
            s = (c(1.0) + t).astype(c)
            y = ((c(0.5) * v).astype(c) * s).astype(c)
        elif which == "quick":
            z = (c(1.702) * v).astype(c)
            e = step_ulps(np.exp(-z.astype(np.float64)).astype(c), shift)
            t = (c(1.0) + e).astype(c)
            y = (v / t if x_over_t else v * (c(1.0) / t).astype(c)).astype(c)
        else:
            raise ValueError(which)
        return np.asarray(y.astype(io))


def _same(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    u = np.uint16 if a.dtype == np.float16 else np.uint32
    return np.asarray((a.view(u) == b.view(u)) | (np.isnan(a) & np.isnan(b)))


def assert_sequence_up_to_transcendental(
    got: npt.NDArray[Any],
    x: npt.ArrayLike,
    which: str,
    io: str,
    cp: str,
    what: str = "",
    ort_rewrites: bool = False,
) -> None:
    """Every ``got[i]`` is bit for bit :func:`op_sequence` of ``x[i]`` for some shift within
    ``TRANSCENDENTAL_ULPS[cp]`` (NaN matching NaN); with ``ort_rewrites`` also the sequence as
    ORT's optimizer rewrites it (QuickGELU in float32: ``x_over_t``)."""
    k = TRANSCENDENTAL_ULPS[cp]
    exact = op_sequence(which, x, io, cp)
    assert got.dtype == exact.dtype and got.shape == exact.shape, (got.dtype, got.shape)
    forms = (False, True) if ort_rewrites and which == "quick" and cp == "float32" else (False,)
    ok = np.zeros(got.shape, bool)
    for shift in (0, *(s for j in range(1, k + 1) for s in (j, -j))):
        for x_over_t in forms:
            ok |= _same(got, op_sequence(which, x, io, cp, shift, x_over_t))
        if ok.all():
            return
    bad = np.flatnonzero(~ok)
    i = int(bad[np.argmax(ulp_distance(got.ravel()[bad], exact.ravel()[bad]))])
    xi = np.ravel(np.asarray(x))[i].item()
    raise AssertionError(
        f"{what}: {bad.size} outputs are not the {which} sequence for any {cp} "
        f"transcendental within {k} ulps of the correctly rounded one; e.g. x={xi!r}: "
        f"got {got.ravel()[i].item()!r}, correctly rounded sequence {exact.ravel()[i].item()!r}"
    )
