"""Back to ONNX exactly: a fake-quant GELU exports as ``Q → DQ → GELU → Q → DQ``.

Inside ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``), each
:class:`~gelu_quant.torch.fakequant.GeluFakeQuant` is written as ``QuantizeLinear →
DequantizeLinear → GELU → QuantizeLinear → DequantizeLinear`` with its current (trained) scales
and zero points as initializers; low-bit codes get a ``Clip`` to their code range after each
``QuantizeLinear`` (8-bit container). GELU is the ONNX ``Gelu`` op at opset 20 and later, else the
exporters' erf / tanh pattern (QuickGELU: ``x · sigmoid(1.702 x)``). ``gelu-quant convert``
(QDQ path) collapses ``DQ → GELU → Q`` into one ``GeluLut`` whose table it builds from the
graph's scales — the table the module trained with, bit for bit (the ``Clip`` after the output
``QuantizeLinear`` saturates the 8-bit table's codes to the low-bit range, which is what the
low-bit table does).

A :class:`~gelu_quant.torch.grouped.GroupedGeluFakeQuant` is written the same way with per-axis
``QuantizeLinear`` / ``DequantizeLinear`` (``axis=-1``: the channel axis is the last; opset 13 or
later), every channel carrying its group's scale and zero point; ``convert`` groups the channels
by their qparams again and collapses ``DQ → GELU → Q`` into one ``GeluGroupedLut`` with the
trained tables.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from gelu_quant.errors import ModelError, SpecError
from gelu_quant.qparams import QParams, qlimits

if TYPE_CHECKING:
    from gelu_quant.torch.fakequant import GeluFakeQuant
    from gelu_quant.torch.grouped import GroupedGeluFakeQuant

_TORCH_ZP = {"int8": torch.int8, "uint8": torch.uint8}


_LIVE: dict[int, Any] = {}
"""Specs of the modules being exported, by module id: the Function's forward evaluates them."""


class _QdqGelu(torch.autograd.Function):
    """Forward: the module's exact table value; ONNX: the Q/DQ graph above. The qparams go in
    as Python scalars (the TorchScript exporter passes those to ``symbolic`` as constants)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        key: int,
        in_scale: float,
        in_zp: int,
        in_dtype: str,
        in_bits: int,
        out_scale: float,
        out_zp: int,
        out_dtype: str,
        out_bits: int,
        form: str,
    ) -> torch.Tensor:
        # numpy, not torch ops: the tracer must not record the lookup (the values are the same,
        # GeluFakeQuant is bit-identical to the spec's evaluate)
        y = _LIVE[key].evaluate(x.detach().cpu().numpy())
        return torch.from_numpy(y).to(x.dtype)

    @staticmethod
    def symbolic(
        g: Any,
        x: Any,
        key: int,
        in_scale: float,
        in_zp: int,
        in_dtype: str,
        in_bits: int,
        out_scale: float,
        out_zp: int,
        out_dtype: str,
        out_bits: int,
        form: str,
    ) -> Any:
        def quant(v: Any, scale: float, zp: int, dtype: str, bits: int) -> Any:
            s = g.op("Constant", value_t=torch.tensor(scale, dtype=torch.float32))
            zdt = _TORCH_ZP[dtype]
            z = g.op("Constant", value_t=torch.tensor(zp, dtype=zdt))
            q = g.op("QuantizeLinear", v, s, z)
            if bits < 8:
                qmin, qmax = qlimits(dtype, bits)
                lo = g.op("Constant", value_t=torch.tensor(qmin, dtype=zdt))
                hi = g.op("Constant", value_t=torch.tensor(qmax, dtype=zdt))
                q = g.op("Clip", q, lo, hi)
            return g.op("DequantizeLinear", q, s, z)

        xh = quant(x, in_scale, in_zp, in_dtype, in_bits)
        y = _gelu_nodes(g, xh, form, _opset())
        return quant(y, out_scale, out_zp, out_dtype, out_bits)


def _opset() -> int:
    """The opset of the export under way (the TorchScript exporter's globals; newer torch keeps
    them under ``torch.onnx._internal.torchscript_exporter``)."""
    import importlib

    for where in ("torch.onnx._internal.torchscript_exporter._globals", "torch.onnx._globals"):
        try:
            return int(importlib.import_module(where).GLOBALS.export_onnx_opset_version)
        except (ImportError, AttributeError):
            continue
    return 17  # pragma: no cover - torch internals moved again


def _const(g: Any, v: float) -> Any:
    return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))


def _gelu_nodes(g: Any, x: Any, form: str, opset: int) -> Any:
    if form in ("exact", "tanh") and opset >= 20:
        return g.op("Gelu", x, approximate_s="none" if form == "exact" else "tanh")
    if form == "exact":
        e = g.op("Erf", g.op("Div", x, _const(g, math.sqrt(2.0))))
        return g.op("Mul", g.op("Mul", x, g.op("Add", e, _const(g, 1.0))), _const(g, 0.5))
    if form == "tanh":
        x3 = g.op("Mul", x, g.op("Mul", x, x))
        inner = g.op("Add", x, g.op("Mul", _const(g, 0.044715), x3))
        t = g.op("Tanh", g.op("Mul", _const(g, math.sqrt(2.0 / math.pi)), inner))
        return g.op("Mul", g.op("Mul", x, g.op("Add", _const(g, 1.0), t)), _const(g, 0.5))
    if form == "quick":
        return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, _const(g, 1.702))))
    raise ValueError(f"unknown GELU form {form!r}")


def qdq_gelu(module: GeluFakeQuant, x: torch.Tensor) -> torch.Tensor:
    """The module's forward inside ``torch.onnx.export``."""
    _LIVE[id(module)] = module.spec()  # the table of the current scales
    iq, oq = module.in_qparams, module.out_qparams
    out: torch.Tensor = _QdqGelu.apply(
        x,
        id(module),
        iq.scale,
        iq.zero_point,
        iq.dtype,
        iq.bits,
        oq.scale,
        oq.zero_point,
        oq.dtype,
        oq.bits,
        module.form,
    )
    return out


class _QdqGroupedGelu(torch.autograd.Function):
    """Forward: the grouped module's exact table value; ONNX: per-axis Q/DQ (``axis=-1``, one
    scale and zero point per channel, each its group's) around GELU. The spec is read from
    :data:`_LIVE` by ``key`` (vectors cannot go to ``symbolic`` as constants)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, key: int) -> torch.Tensor:
        y = _LIVE[key].evaluate(x.detach().cpu().numpy())
        return torch.from_numpy(y).to(x.dtype)

    @staticmethod
    def symbolic(g: Any, x: Any, key: int) -> Any:
        spec = _LIVE[key]
        cg = torch.from_numpy(spec.channel_group.copy())

        def quant(v: Any, qps: list[QParams]) -> Any:
            zdt = _TORCH_ZP[qps[0].dtype]
            scales = torch.tensor([q.scale for q in qps], dtype=torch.float32)[cg]
            zps = torch.tensor([q.zero_point for q in qps], dtype=zdt)[cg]
            s = g.op("Constant", value_t=scales)
            z = g.op("Constant", value_t=zps)
            q = g.op("QuantizeLinear", v, s, z, axis_i=-1)
            bits = qps[0].bits
            if bits < 8:
                qmin, qmax = qlimits(qps[0].dtype, bits)
                lo = g.op("Constant", value_t=torch.tensor(qmin, dtype=zdt))
                hi = g.op("Constant", value_t=torch.tensor(qmax, dtype=zdt))
                q = g.op("Clip", q, lo, hi)
            return g.op("DequantizeLinear", q, s, z, axis_i=-1)

        in_qps = [t.in_qparams for t in spec.groups]
        out_qps = [t.out_qparams for t in spec.groups]
        xh = quant(x, in_qps)
        y = _gelu_nodes(g, xh, spec.form, _opset())
        return quant(y, out_qps)


PER_AXIS_OPSET = 13
"""The first opset whose QuantizeLinear / DequantizeLinear take per-axis scales."""


def qdq_grouped_gelu(module: GroupedGeluFakeQuant, x: torch.Tensor) -> torch.Tensor:
    """The grouped module's forward inside ``torch.onnx.export``: per-axis ``Q -> DQ -> GELU ->
    Q -> DQ`` on the last axis (ModelError below opset 13, or for groups of different code
    widths, which one ``Clip`` cannot express)."""
    opset = _opset()
    if opset < PER_AXIS_OPSET:
        raise ModelError(
            f"a grouped fake-quant GELU exports per-axis QuantizeLinear, which needs opset "
            f">= {PER_AXIS_OPSET}; export with opset={PER_AXIS_OPSET} or later (got {opset})"
        )
    if len(set(module.in_bits)) != 1 or len(set(module.out_bits)) != 1:
        raise ModelError(
            "a grouped fake-quant GELU whose groups have different code widths has no ONNX "
            f"export (input bits {module.in_bits}, output bits {module.out_bits}); give every "
            "group the same widths"
        )
    c = module.channel_group.numel()
    if x.ndim == 0 or x.shape[-1] != c:
        raise SpecError(
            f"a grouped GELU over {c} channels needs inputs whose last axis has {c} entries, "
            f"got shape {tuple(x.shape)}"
        )
    _LIVE[id(module)] = module.spec()  # the tables of the current scales
    out: torch.Tensor = _QdqGroupedGelu.apply(x, id(module))
    return out


def export_qat_onnx(
    model: torch.nn.Module,
    args: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    max_ir_version: int = 10,
    **kwargs: Any,
) -> None:
    """``torch.onnx.export`` (TorchScript exporter) of a prepared model, in eval mode, with the
    IR version capped for ONNX Runtime; keyword arguments go to ``torch.onnx.export``."""
    import onnx

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                tuple(args),
                str(path),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
                **kwargs,
            )
    finally:
        model.train(was_training)
        _LIVE.clear()
    proto = onnx.load(str(path))
    if proto.ir_version > max_ir_version:
        proto.ir_version = max_ir_version
        onnx.save(proto, str(path))
