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

#: Elements per batch and site used for the error curve (strided subsample; plots only).
ERROR_CURVE_SAMPLES = 65536


@dataclass(frozen=True)
class SiteMetrics:
    """How one GELU site's output differs between candidate and reference."""

    id: str
    input: str
    output: str
    variant: str
    comparable: bool
    reason: str | None = None
    """Why the site is not comparable (None when it is)."""
    errors: ErrorStats | None = None
    input_range: tuple[float, float] | None = None
    """The range the candidate's approximation covers, when known (from a QuantizeLinear on the
    site's input in the candidate, or given in the config)."""
    plot: str | None = None
    """Path of the site's plot image, when plots were written."""


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


def _const_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    vals[node.output[0]] = numpy_helper.to_array(a.t)
    return vals


def quantized_input_ranges(
    model: onnx.ModelProto, sites: Sequence[GeluSite]
) -> dict[str, tuple[float, float]]:
    """The real range of a per-tensor ``QuantizeLinear`` applied to each site's input.

    Reads the candidate model: a site whose input tensor feeds a QuantizeLinear with constant
    scale and zero point has the range ``[(qmin - zp) * scale, (qmax - zp) * scale]``. Sites
    without one are absent from the result.
    """
    consts = _const_values(model)
    by_input: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx"):
            by_input.setdefault(node.input[0], node)
    out: dict[str, tuple[float, float]] = {}
    for s in sites:
        node = by_input.get(s.input)
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
    if site.variant == "tanh":
        return gelu_tanh(x)
    if site.variant == "quick":
        return quick_gelu(x, site.alpha if site.alpha is not None else 1.702)
    return gelu_exact(x)


class SiteAccumulator:
    """Streaming comparison of one site; optionally the data for its plot."""

    def __init__(self, site: GeluSite, *, with_plot_data: bool = False) -> None:
        self.site = site
        self.errors = ErrorAccumulator()
        self.histogram: AdaptiveHistogram | None = None
        self.error_curve: AdaptiveHistogram | None = None
        if with_plot_data:
            self.histogram = AdaptiveHistogram(bins=512)
            if site.bias is None:
                self.error_curve = AdaptiveHistogram(bins=512, track_max=True)

    def update(self, ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> None:
        s = self.site
        self.errors.update(ref[s.output], cand[s.output])
        if self.histogram is not None and s.input in ref:
            self.histogram.update(ref[s.input])
        if self.error_curve is not None and s.input in cand:
            x = np.asarray(cand[s.input]).ravel()
            y = np.asarray(cand[s.output]).ravel()
            if x.shape == y.shape:
                step = max(1, x.size // ERROR_CURVE_SAMPLES)
                xs, ys = x[::step].astype(np.float64), y[::step].astype(np.float64)
                self.error_curve.update(xs, np.abs(ys - _reference_gelu(s, xs)))


def comparable_sites(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, sites: Sequence[GeluSite]
) -> dict[str, str | None]:
    """For each site id: None if it can be compared, else the reason it cannot."""
    ref_names, cand_names = produced_tensors(reference), produced_tensors(candidate)
    seen: set[str] = set()
    out: dict[str, str | None] = {}
    for s in sites:
        if s.id in seen:
            raise ModelError(f"two GELU sites share the id {s.id!r}; site ids must be unique")
        seen.add(s.id)
        if s.in_subgraph:
            out[s.id] = f"site is inside subgraph {s.graph!r}; only main-graph sites are probed"
        elif s.output not in ref_names:
            out[s.id] = f"reference has no tensor {s.output!r}"
        elif s.output not in cand_names:
            out[s.id] = (
                f"candidate has no tensor {s.output!r} (the converter should keep each site's "
                "output name)"
            )
        else:
            out[s.id] = None
    return out
