"""Correct the linear layer after each converted site for its table's error (default on).

For a float site whose output is read by one ``MatMul(y, V)`` with a constant float32 ``V``
(and, optionally, an ``Add`` of a constant bias ``c`` as that MatMul's only reader), the site's
sampled input rows from calibration (:meth:`RangeSource.sample_for`) give the table's output
``ŷ = spec.evaluate(x)`` and the exact ``y = GELU(x)``; :func:`fit_consumer` fits ``ΔV``, ``Δc``
and chooses their ridge on held-out rows, or no correction. The pass then writes ``V + ΔV`` and
``c + Δc`` as new initializers (the old ones go when nothing else reads them). The tables are
unchanged: the site still runs the same one (or K) tables; only the next layer's float weights
move, which an int8 weight quantization of that layer absorbs like any other weights (the
manifest reports its error before and after, as ``--fold-scales`` does).

Every site gets a ``corrected`` entry in the manifest: applied or not, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx_ir as ir

from gelu_quant.graph.consumer_fit import MIN_GAIN, fit_consumer
from gelu_quant.graph.irview import add_initializer, drop_if_unused, float32_initializer
from gelu_quant.graph.manifest import SiteRecord
from gelu_quant.graph.passes.fold_scales import int8_weight_error
from gelu_quant.lut.spec import GeluApprox
from gelu_quant.numerics import GeluForm, gelu


class SampleSource(Protocol):
    """Sampled input rows per site (``gelu_quant.calib.ranges_file.RangesFile``)."""

    def sample_for(self, site_id: str) -> npt.NDArray[np.float16] | None: ...

    def sample_problem(self) -> str: ...


class _NoCorrection(Exception):
    pass


def _const_f32(v: ir.Value | None) -> npt.NDArray[np.float32]:
    try:
        return float32_initializer(v)
    except ValueError as e:
        raise _NoCorrection(str(e)) from None


@dataclass
class CorrectConsumers(ir.passes.InPlacePass):
    """Fit and write every converted float site's consumer correction; ``records`` (the
    replacement pass's) get a ``corrected`` entry each."""

    records: list[SiteRecord]
    specs: Mapping[str, GeluApprox]
    samples: SampleSource
    taken: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__()

    def _init(self, graph: ir.Graph, base: str, a: npt.NDArray[Any]) -> ir.Value:
        return add_initializer(graph, self.taken, base, "gq_corrected", a)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        values: dict[str, ir.Value] = {}
        for n in graph:
            values.update({o.name: o for o in n.outputs if o.name})
        changed = False
        for i, rec in enumerate(self.records):
            if rec.status != "converted" or rec.id not in self.specs:
                continue
            if rec.mode != "float":
                info: dict[str, Any] = {
                    "applied": False,
                    "reason": "Q/DQ site: its output codes are the model's own",
                }
            else:
                try:
                    info = self._correct(graph, rec, values)
                    changed = changed or bool(info["applied"])
                except _NoCorrection as e:
                    info = {"applied": False, "reason": str(e)}
            self.records[i] = replace(rec, corrected=info)
        return ir.passes.PassResult(model, changed)

    def _correct(
        self, graph: ir.Graph, rec: SiteRecord, values: dict[str, ir.Value]
    ) -> dict[str, Any]:
        y = values.get(rec.output_tensor or rec.output)
        if y is None:
            raise _NoCorrection("the site's output is not a node output")
        uses = list(y.uses())
        if y.is_graph_output() or len(uses) != 1:
            raise _NoCorrection("the GELU output has other readers than one MatMul")
        mm = uses[0][0]
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx") or mm.inputs[0] is not y:
            raise _NoCorrection("the GELU output is not read by a MatMul as its first input")
        v_v = mm.inputs[1]
        v = _const_f32(v_v)
        if v.ndim != 2:
            raise _NoCorrection("the consumer's weight is not 2-D [channels, out]")
        sample = self.samples.sample_for(rec.id)
        if sample is None:
            raise _NoCorrection(self.samples.sample_problem())
        if sample.ndim != 2 or sample.shape[1] != v.shape[0]:
            raise _NoCorrection(
                f"the row sample has {sample.shape[-1]} channels, the consumer's weight "
                f"{v.shape[0]} rows"
            )
        add, c_v = None, None
        mm_uses = list(mm.outputs[0].uses())
        if len(mm_uses) == 1 and not mm.outputs[0].is_graph_output():
            cand = mm_uses[0][0]
            if cand.op_type == "Add" and cand.domain in ("", "ai.onnx"):
                a, b = cand.inputs
                other = b if a is mm.outputs[0] else a
                if other is not None and other.const_value is not None:
                    c = np.asarray(other.const_value.numpy())
                    if c.dtype == np.float32 and c.shape == (v.shape[1],):
                        add, c_v = cand, other
        spec = self.specs[rec.id]
        x = sample.astype(np.float32)
        form: GeluForm = spec.form
        y_hat = np.asarray(spec.evaluate(x), np.float64)
        y_true = gelu(x.astype(np.float64), form)
        # the channels with a sampled value outside the table's range: an error above twice
        # the proven in-range bound (the float16 sample can move a value by a code)
        bound = 2.0 * float((rec.error or {}).get("max_abs", 0.0))
        outside = np.flatnonzero((np.abs(y_hat - y_true) > bound).any(axis=0))
        if outside.size == 0:
            raise _NoCorrection("no sampled value lies outside the table's range")
        fit = fit_consumer(y_hat, y_true, v, intercept=add is not None, predictors=outside)
        info: dict[str, Any] = {
            "applied": fit.applied,
            "rows": fit.rows,
            "channels": [int(c) for c in outside],
            "weight": v_v.name if v_v is not None else None,
            "bias": c_v.name if c_v is not None else None,
            "ridge": fit.ridge,
            "heldout_error": fit.heldout_error,
        }
        if not fit.applied:
            info["reason"] = (
                f"too few sampled rows ({fit.rows})"
                if len(fit.heldout_error) == 1
                else f"no ridge lowers the held-out error by {MIN_GAIN:.0%} (the layer is kept)"
            )
            return info
        assert fit.delta_w is not None and v_v is not None
        v2 = (v.astype(np.float64) + fit.delta_w).astype(np.float32)
        info["int8_weight_error_before"] = int8_weight_error(v, axis=1)
        info["int8_weight_error_after"] = int8_weight_error(v2, axis=1)
        mm.replace_input_with(1, self._init(graph, v_v.name or "w", v2))
        drop_if_unused(graph, v_v)
        if add is not None and c_v is not None and fit.delta_b is not None:
            c = np.asarray(c_v.const_value.numpy(), np.float64)  # type: ignore[union-attr]
            c2 = (c + fit.delta_b).astype(np.float32)
            add.replace_input_with(
                list(add.inputs).index(c_v), self._init(graph, c_v.name or "c", c2)
            )
            drop_if_unused(graph, c_v)
        return info
