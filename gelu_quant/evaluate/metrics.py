"""Streaming accuracy metrics: accumulate sums over batches, never whole tensors.

:class:`ErrorAccumulator` holds what the error metrics of one tensor need (element count, sums of
``|e|``, ``e^2`` and ``y^2``, the largest ``|e|``), so memory does not grow with the number of
samples. :class:`OutputAccumulator` adds per-sample cosine similarity and, for classification
outputs, top-1 agreement, KL divergence and task accuracy against labels.

Conventions (also in the JSON report's documentation, ``report.py``):

- axis 0 of every output is the batch (sample) axis; a rank-0 output is one sample per batch;
- the error is ``candidate - reference``, computed in float64;
- SQNR in dB is ``10 log10(sum(reference^2) / sum(error^2))`` over all elements (``inf`` when
  the error is exactly 0);
- the cosine of a sample is ``<r, c> / (|r| |c|)`` over its flattened elements; 1 when both are
  all zeros, 0 when only one is;
- classification outputs are ``[batch, classes]`` logits; KL is ``KL(softmax(r) || softmax(c))``
  in nats, averaged over samples; accuracies are fractions in [0, 1], and the accuracy drop is
  ``100 * (accuracy_reference - accuracy_candidate)`` in percentage points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import DataError

OutputKind = Literal["tensor", "classification"]


def sqnr_db(signal_power_sum: float, noise_power_sum: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for zero noise, ``-inf`` for zero signal."""
    if noise_power_sum == 0.0:
        return math.inf
    if signal_power_sum == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power_sum / noise_power_sum)


@dataclass(frozen=True)
class ErrorStats:
    """Error metrics of one tensor over all evaluated elements."""

    elements: int
    max_abs_error: float
    mean_abs_error: float
    rmse: float
    sqnr_db: float
    nonfinite: int
    """Elements where the reference or the candidate is NaN or infinite (left out of the sums)."""


class ErrorAccumulator:
    """Running sums for :class:`ErrorStats`; ``update`` takes one batch of both tensors."""

    def __init__(self) -> None:
        self.elements = 0
        self.nonfinite = 0
        self.sum_abs = 0.0
        self.sum_sq = 0.0
        self.sum_ref_sq = 0.0
        self.max_abs = 0.0

    def update(self, reference: npt.ArrayLike, candidate: npt.ArrayLike) -> None:
        r = np.asarray(reference, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
        if r.shape != c.shape:
            raise DataError(
                f"reference and candidate tensors differ in shape: {r.shape} vs {c.shape}"
            )
        finite = np.isfinite(r) & np.isfinite(c)
        nf = int(finite.size - np.count_nonzero(finite))
        if nf:
            r, c = r[finite], c[finite]
        e = c - r
        ae = np.abs(e)
        self.elements += int(ae.size)
        self.nonfinite += nf
        self.sum_abs += float(ae.sum())
        self.sum_sq += float(np.dot(e.ravel(), e.ravel()))
        self.sum_ref_sq += float(np.dot(r.ravel(), r.ravel()))
        if ae.size:
            self.max_abs = max(self.max_abs, float(ae.max()))

    def result(self) -> ErrorStats:
        n = self.elements
        return ErrorStats(
            elements=n,
            max_abs_error=self.max_abs,
            mean_abs_error=self.sum_abs / n if n else math.nan,
            rmse=math.sqrt(self.sum_sq / n) if n else math.nan,
            sqnr_db=sqnr_db(self.sum_ref_sq, self.sum_sq) if n else math.nan,
            nonfinite=self.nonfinite,
        )


def sample_cosines(reference: npt.ArrayLike, candidate: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine similarity of each sample (axis 0) over its flattened elements, in float64."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.ndim == 0:
        r, c = r.reshape(1, 1), c.reshape(1, 1)
    r = r.reshape(r.shape[0], -1)
    c = c.reshape(c.shape[0], -1)
    dot = np.einsum("ij,ij->i", r, c)
    nr = np.sqrt(np.einsum("ij,ij->i", r, r))
    nc = np.sqrt(np.einsum("ij,ij->i", c, c))
    denom = nr * nc
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    both_zero = (nr == 0) & (nc == 0)
    cos = np.where(both_zero, 1.0, cos)
    return np.clip(cos, -1.0, 1.0)


def _log_softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    m = x.max(axis=1, keepdims=True)
    z = x - m
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), dtype=np.float64)


@dataclass(frozen=True)
class OutputMetrics:
    """All metrics of one model output. Classification fields are None for other outputs."""

    name: str
    kind: OutputKind
    samples: int
    errors: ErrorStats
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None = None
    kl_divergence: float | None = None
    accuracy_reference: float | None = None
    accuracy_candidate: float | None = None
    labels: int | None = None
    """How many labels were scored (None without labels)."""

    @property
    def accuracy_drop(self) -> float | None:
        """Reference minus candidate accuracy in percentage points (None without labels)."""
        if self.accuracy_reference is None or self.accuracy_candidate is None:
            return None
        return 100.0 * (self.accuracy_reference - self.accuracy_candidate)


class OutputAccumulator:
    """Streaming metrics of one model output.

    ``update(reference, candidate, labels=None)`` takes one batch; ``labels`` (one int per sample)
    only for classification outputs.
    """

    def __init__(self, name: str, kind: OutputKind = "tensor") -> None:
        self.name = name
        self.kind: OutputKind = kind
        self.errors = ErrorAccumulator()
        self.samples = 0
        self.cos_sum = 0.0
        self.cos_min = math.inf
        self.top1_agree = 0
        self.kl_sum = 0.0
        self.labelled = 0
        self.correct_ref = 0
        self.correct_cand = 0

    def update(
        self,
        reference: npt.ArrayLike,
        candidate: npt.ArrayLike,
        labels: npt.ArrayLike | None = None,
        mask: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """``mask`` (the leading axes' shape): the positions compared; the others (padding)
        count neither in the errors nor in each sample's cosine."""
        r = np.asarray(reference, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
        if mask is not None:
            self.errors.update(r[mask], c[mask])
            keep = mask.reshape(mask.shape + (1,) * (r.ndim - mask.ndim))
            cos = sample_cosines(np.where(keep, r, 0.0), np.where(keep, c, 0.0))
        else:
            self.errors.update(r, c)
            cos = sample_cosines(r, c)
        self.samples += int(cos.size)
        self.cos_sum += float(cos.sum())
        if cos.size:
            self.cos_min = min(self.cos_min, float(cos.min()))
        if self.kind != "classification":
            if labels is not None:
                raise DataError(f"labels given for output {self.name!r}, which is not classifying")
            return
        if r.ndim != 2:
            raise DataError(
                f"classification output {self.name!r} must be [batch, classes], got shape {r.shape}"
            )
        ar, ac = r.argmax(axis=1), c.argmax(axis=1)
        self.top1_agree += int(np.count_nonzero(ar == ac))
        lr, lc = _log_softmax(r), _log_softmax(c)
        self.kl_sum += float((np.exp(lr) * (lr - lc)).sum())
        if labels is not None:
            lab = np.asarray(labels).reshape(-1)
            if lab.shape[0] != r.shape[0]:
                raise DataError(
                    f"{lab.shape[0]} labels for a batch of {r.shape[0]} samples of {self.name!r}"
                )
            self.labelled += int(lab.shape[0])
            self.correct_ref += int(np.count_nonzero(ar == lab))
            self.correct_cand += int(np.count_nonzero(ac == lab))

    def result(self) -> OutputMetrics:
        n = self.samples
        cls = self.kind == "classification"
        return OutputMetrics(
            name=self.name,
            kind=self.kind,
            samples=n,
            errors=self.errors.result(),
            cosine_mean=self.cos_sum / n if n else math.nan,
            cosine_min=self.cos_min if n else math.nan,
            top1_agreement=(self.top1_agree / n if n else math.nan) if cls else None,
            kl_divergence=(max(self.kl_sum, 0.0) / n if n else math.nan) if cls else None,
            accuracy_reference=self.correct_ref / self.labelled if self.labelled else None,
            accuracy_candidate=self.correct_cand / self.labelled if self.labelled else None,
            labels=self.labelled if self.labelled else None,
        )
