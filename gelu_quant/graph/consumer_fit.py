"""The consumer correction's numerics: refit the linear layer after a table to the table's error.

A converted site computes ``ŷ = table(x)`` where the model computed ``y = GELU(x)``; the next
layer computes ``z = y·V + c``. On sampled input rows ``x`` (calibration data), the correction
finds ``ΔV``, ``Δc`` so that ``ŷ·(V + ΔV) + (c + Δc)`` is as close as possible to ``y·V + c``:

    minimise  ‖(y − ŷ)·V − (ŷ − μ)·ΔV − e₀‖² + λ·d·‖ΔV‖²,   Δc = e₀ − μ·ΔV

(``μ`` the mean of ``ŷ``, ``e₀`` the mean target, ``d`` the mean diagonal of the centred Gram
matrix, so ``λ`` is relative; without a bias in the graph, no intercept). It is the
least-squares generalisation of bias correction (Nagel et al. 2019, Finkelstein et al. 2019:
the ``ΔV = 0`` case) to the layer's weights, as in layer-wise reconstruction (AdaQuant,
Hubara et al. 2021) but in closed form. It corrects what is *linearly predictable* about the
table's error from the table's own output, across the channels: in transformers that is mostly
the clipped outlier channels of the few tokens that carry them, whose other channels identify
them.

``λ`` is chosen on held-out rows (every fourth row of the sample, which is in random order):
the candidate with the least held-out error wins if it beats "no correction" by
:data:`MIN_GAIN`, so a site where the fit does not generalise keeps its layer unchanged. The
final fit uses every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RIDGES = (1e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""Candidate relative ridge strengths ``λ``."""
HOLDOUT_EVERY = 4
"""Every ``HOLDOUT_EVERY``-th sampled row is held out to choose ``λ``."""
MIN_ROWS = 64
"""Fewer sampled rows than this: no correction."""
MIN_GAIN = 0.02
"""A ridge must lower the held-out error by at least this fraction to be applied: smaller
gains are within what fitting pure noise reaches by chance (one in a few seeds reaches 0.5 %)
and would move the layer's weights for nothing."""

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ConsumerFit:
    """The chosen correction (``delta_w`` None: none) and what chose it."""

    delta_w: F64 | None
    """``ΔV``, shape of ``V`` (channels × outputs)."""
    delta_b: F64 | None
    """``Δc`` (outputs); None without an intercept."""
    ridge: float | None
    rows: int
    heldout_error: dict[str, float]
    """Held-out ``‖target − fit‖² / ‖target‖²`` per candidate (``none`` = 1)."""

    @property
    def applied(self) -> bool:
        return self.delta_w is not None


_Moments = tuple[int, F64, F64, F64, F64]


def _moments(q: F64, e: F64) -> _Moments:
    """``(n, Σq, Σe, qᵀq, qᵀe)``: what the fits need of some rows (sums: rows add up)."""
    return q.shape[0], q.sum(axis=0), e.sum(axis=0), q.T @ q, q.T @ e


def _add(a: _Moments, b: _Moments) -> _Moments:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4]


def _solve(mom: _Moments, intercept: bool, ridges: tuple[float, ...]) -> list[tuple[F64, F64]]:
    """Ridge solutions ``(ΔV, Δc)`` from the rows' moments, one per relative ridge."""
    n, sq, se, qq, qe = mom
    if intercept:  # centre: Σ(q − μ)(q − μ)ᵀ = qᵀq − n μμᵀ
        mu, e0 = sq / n, se / n
        a = qq - n * np.outer(mu, mu)
        b = qe - n * np.outer(mu, e0)
    else:
        mu, e0 = np.zeros(qq.shape[0]), np.zeros(qe.shape[1])
        a, b = qq, qe
    d = float(np.trace(a)) / a.shape[0] or 1.0
    eye = np.eye(a.shape[0])
    out: list[tuple[F64, F64]] = []
    for lam in ridges:
        dw = np.asarray(np.linalg.solve(a + lam * d * eye, b), np.float64)
        out.append((dw, np.asarray(e0 - mu @ dw, np.float64)))
    return out


def fit_consumer(
    y_hat: npt.ArrayLike,
    y_true: npt.ArrayLike,
    weight: npt.ArrayLike,
    *,
    intercept: bool,
    ridges: tuple[float, ...] = RIDGES,
    predictors: npt.ArrayLike | None = None,
) -> ConsumerFit:
    """Choose and fit the correction of ``weight`` (``V``, channels × outputs) for sampled rows
    whose table output is ``y_hat`` and exact output ``y_true`` (rows × channels).

    ``predictors``: the channels whose rows of ``V`` may change (None: all); the others keep
    their weights, and only the chosen channels' table outputs predict the error."""
    q = np.asarray(y_hat, np.float64)
    y = np.asarray(y_true, np.float64)
    v = np.asarray(weight, np.float64)
    if q.ndim != 2 or q.shape != y.shape or v.ndim != 2 or v.shape[0] != q.shape[1]:
        raise ValueError(f"rows {q.shape} / {y.shape} do not match a weight of shape {v.shape}")
    n = q.shape[0]
    if n < MIN_ROWS:
        return ConsumerFit(None, None, None, n, {"none": 1.0})
    e = (y - q) @ v
    cols = np.arange(q.shape[1]) if predictors is None else np.asarray(predictors, np.int64)
    if cols.size == 0:
        return ConsumerFit(None, None, None, n, {"none": 1.0})
    q = q[:, cols]
    held = np.arange(n) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    e_h = e[held]
    norm = float(np.sum(e_h * e_h))
    scores = {"none": 1.0}
    fit_rows = _moments(q[~held], e[~held])
    if norm > 0.0:
        for lam, (dw, db) in zip(ridges, _solve(fit_rows, intercept, ridges), strict=True):
            r = e_h - (q[held] @ dw + db)
            scores[f"{lam:g}"] = float(np.sum(r * r)) / norm
    best = min(scores, key=lambda k: scores[k])
    if best == "none" or scores[best] > 1.0 - MIN_GAIN:
        return ConsumerFit(None, None, None, n, scores)
    lam = float(best)
    dw, db = _solve(_add(fit_rows, _moments(q[held], e[held])), intercept, (lam,))[0]
    full = np.zeros(v.shape)
    full[cols] = dw
    return ConsumerFit(full, db if intercept else None, lam, n, scores)
