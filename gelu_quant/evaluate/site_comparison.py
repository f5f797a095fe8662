"""Per-GELU-site comparison: each site's output in the candidate against the reference.

Sites are found in the reference model; the converted candidate keeps each site's output tensor
name, so probing that name in both models compares the same GELU on the same inputs (with the
upstream error of the candidate included: this is the error the rest of the model sees). A site
whose output tensor the candidate lacks, or that lives in a subgraph (which cannot be exposed as
a graph output), is reported as *not comparable* with the reason instead of failing the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from gelu_quant.errors import ModelError
from gelu_quant.evaluate.histogram import AdaptiveHistogram
from gelu_quant.evaluate.metrics import ErrorAccumulator, ErrorStats
from gelu_quant.evaluate.probe import produced_tensors
from gelu_quant.graph.sites import GeluSite
from gelu_quant.numerics import gelu_exact, gelu_tanh, quick_gelu
from gelu_quant.qparams import QParams
from gelu_quant.token_mask import token_mask

#: Elements per batch and site used for the error curve (strided subsample; plots only).
ERROR_CURVE_SAMPLES = 65536


@dataclass(frozen=True)
class SiteMetrics:
    """How one GELU site's output differs between candidate and reference."""

    id: str
    input: str
    output: str
    form: str
    comparable: bool
    reason: str | None = None
    """Why the site is not comparable (None when it is)."""
    errors: ErrorStats | None = None
    input_range: tuple[float, float] | None = None
    """The range the candidate's approximation covers, when known (from a QuantizeLinear on the
    site's input in the candidate, or given in the config)."""
    plot: str | None = None
    """Path of the site's plot image, when plots were written."""
    compared: str | None = None
    """What was compared: the output tensor's name, or ``"<int8 tensor> (dequantized)"`` for a
    QDQ site whose float output the candidate no longer has."""


def rank_worst_first(sites: Sequence[SiteMetrics]) -> list[SiteMetrics]:
    """Comparable sites by ascending SQNR (ties: larger max error first), then the others.

    The order is total and deterministic: the site id breaks remaining ties.
    """

    def key(s: SiteMetrics) -> tuple[int, float, float, str]:
        if not s.comparable or s.errors is None:
            return (1, 0.0, 0.0, s.id)
        q = s.errors.sqnr_db
        return (0, q if not math.isnan(q) else -math.inf, -s.errors.max_abs_error, s.id)

    return sorted(sites, key=key)


def _const_values(model: onnx.ModelProto, base_dir: str) -> dict[str, np.ndarray]:
    """Scalar-sized constants (initializers and Constant nodes), external data read from
    ``base_dir``; big tensors are skipped."""
    vals: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) <= 16:
            try:
                vals[t.name] = numpy_helper.to_array(t, base_dir=base_dir)
            except Exception:  # unreadable external data: the range stays unknown
                continue
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    vals[node.output[0]] = numpy_helper.to_array(a.t)
    return vals


def quantized_input_ranges(
    model: onnx.ModelProto, sites: Sequence[GeluSite], base_dir: str = ""
) -> dict[str, tuple[float, float]]:
    """The real range of a per-tensor ``QuantizeLinear`` applied to each site's input.

    Reads the candidate model: a site whose input tensor feeds a QuantizeLinear with constant
    scale and zero point has the range ``[(qmin - zp) * scale, (qmax - zp) * scale]``; a QDQ site
    (input from a DequantizeLinear) has the range of its ``qdq_in``. Sites with neither are
    absent from the result.
    """
    consts = _const_values(model, base_dir)
    by_input: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx"):
            by_input.setdefault(node.input[0], node)
    out: dict[str, tuple[float, float]] = {}
    for s in sites:
        node = by_input.get(s.input)
        if node is None and s.qdq_in is not None and s.qdq_in.dtype in ("int8", "uint8", "int16"):
            qi = s.qdq_in
            qp_in = QParams(scale=qi.scale, zero_point=qi.zero_point, dtype=qi.dtype)  # type: ignore[arg-type]
            out[s.id] = qp_in.real_range
            continue
        if node is None or len(node.input) < 2 or node.input[1] not in consts:
            continue
        scale = consts[node.input[1]]
        if scale.size != 1:
            continue
        if len(node.input) > 2 and node.input[2]:
            zp_arr = consts.get(node.input[2])
            if zp_arr is None or zp_arr.size != 1:
                continue
            zp, dt = int(zp_arr.reshape(())), zp_arr.dtype.name
        else:
            zp, dt = 0, "uint8"
        if dt not in ("int8", "uint8", "int16"):
            continue
        qp = QParams(scale=float(scale.reshape(())), zero_point=zp, dtype=dt)  # type: ignore[arg-type]
        out[s.id] = qp.real_range
    return out


def _reference_gelu(site: GeluSite, x: np.ndarray) -> np.ndarray:
    if site.form == "tanh":
        return gelu_tanh(x)
    if site.form == "quick":
        return quick_gelu(x, site.alpha if site.alpha is not None else 1.702)
    return gelu_exact(x)


def _dequantized(x: np.ndarray, q: tuple[float, int] | None) -> np.ndarray:
    if q is None:
        return x
    # ONNX scales are float32: dequantize with the float32 value, in float64.
    return (x.astype(np.float64) - q[1]) * float(np.float32(q[0]))


class SiteAccumulator:
    """Streaming comparison of one site; optionally the data for its plot."""

    def __init__(
        self, site: GeluSite, plan: SitePlan | None = None, *, with_plot_data: bool = False
    ) -> None:
        self.site = site
        self.plan = plan if plan is not None else SitePlan(site.output, site.output)
        self.errors = ErrorAccumulator()
        self.histogram: AdaptiveHistogram | None = None
        self.error_curve: AdaptiveHistogram | None = None
        if with_plot_data:
            self.histogram = AdaptiveHistogram(bins=512)
            if site.bias is None:
                self.error_curve = AdaptiveHistogram(bins=512, track_max=True)

    def update(
        self,
        ref: Mapping[str, np.ndarray],
        cand: Mapping[str, np.ndarray],
        feed: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """``feed``: the batch's inputs; with an ``attention_mask`` matching a ``[batch, seq,
        C]`` tensor, only its real tokens are compared (:mod:`gelu_quant.token_mask`)."""
        s, p = self.site, self.plan

        def real(x: np.ndarray) -> np.ndarray:
            m = None if feed is None else token_mask(feed, x.shape)
            return x if m is None else x[m]

        self.errors.update(
            real(_dequantized(ref[p.ref_tensor], p.ref_q)),
            real(_dequantized(cand[p.cand_tensor], p.cand_q)),
        )
        if self.histogram is not None and s.input in ref:
            self.histogram.update(real(ref[s.input]))
        if self.error_curve is not None and s.input in cand and s.output in cand:
            x = np.asarray(real(cand[s.input])).ravel()
            y = np.asarray(real(cand[s.output])).ravel()
            if x.shape == y.shape:
                step = max(1, x.size // ERROR_CURVE_SAMPLES)
                xs, ys = x[::step].astype(np.float64), y[::step].astype(np.float64)
                self.error_curve.update(xs, np.abs(ys - _reference_gelu(s, xs)))


@dataclass(frozen=True)
class SitePlan:
    """How one site is compared: which tensor in each model, dequantized or not."""

    ref_tensor: str
    cand_tensor: str
    ref_q: tuple[float, int] | None = None
    """(scale, zero point) to dequantize the reference tensor with; None: already float."""
    cand_q: tuple[float, int] | None = None

    @property
    def label(self) -> str:
        if self.ref_q is None:
            return self.ref_tensor
        if self.ref_tensor == self.cand_tensor:
            return f"{self.ref_tensor} (dequantized)"
        return f"{self.ref_tensor} / {self.cand_tensor} (dequantized)"


@dataclass(frozen=True)
class QuantizedOutput:
    """The quantized tensor a converted QDQ site writes (from the conversion manifest)."""

    tensor: str
    scale: float
    zero_point: int


def plan_sites(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    sites: Sequence[GeluSite],
    quantized_outputs: Mapping[str, QuantizedOutput] | None = None,
) -> dict[str, SitePlan | str]:
    """For each site id: how to compare it, or the reason it cannot be compared.

    The site's float output is compared when both models have it. A QDQ site (GELU between
    DequantizeLinear and QuantizeLinear) whose float output the candidate folded away is compared
    on its quantized output, dequantized in each model with that model's scale and zero point
    (the candidate's from ``quantized_outputs``, by site id, when the conversion manifest gives
    them; else the reference's).
    """
    ref_names, cand_names = produced_tensors(reference), produced_tensors(candidate)
    qouts = quantized_outputs or {}
    seen: set[str] = set()
    out: dict[str, SitePlan | str] = {}
    for s in sites:
        if s.id in seen:
            raise ModelError(f"two GELU sites share the id {s.id!r}; site ids must be unique")
        seen.add(s.id)
        if s.in_subgraph:
            out[s.id] = f"site is inside subgraph {s.graph!r}; only main-graph sites are probed"
        elif s.output not in ref_names:
            out[s.id] = f"reference has no tensor {s.output!r}"
        elif s.output in cand_names:
            out[s.id] = SitePlan(s.output, s.output)
        elif s.qdq_out is not None and s.qdq_out.tensor in ref_names:
            q = s.qdq_out
            qo = qouts.get(s.id)
            cand_t = qo.tensor if qo is not None else q.tensor
            if cand_t not in cand_names:
                out[s.id] = (
                    f"candidate has neither the float output {s.output!r} nor the quantized "
                    f"output {cand_t!r}"
                )
                continue
            cand_q = (qo.scale, qo.zero_point) if qo is not None else (q.scale, q.zero_point)
            out[s.id] = SitePlan(q.tensor, cand_t, (q.scale, q.zero_point), cand_q)
        else:
            out[s.id] = (
                f"candidate has no tensor {s.output!r} (the converter should keep each site's "
                "output name)"
            )
    return out
