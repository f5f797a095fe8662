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
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from gelu_quant.torch.fakequant import GeluFakeQuant

_TORCH_ZP = {"int8": torch.int8, "uint8": torch.uint8}


class _QdqGelu(torch.autograd.Function):
    """Forward: the module's exact table value; ONNX: the Q/DQ graph above."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: Any) -> torch.Tensor:
        return module.table_forward(x).to(x.dtype)

    @staticmethod
    def symbolic(g: Any, x: Any, module: Any) -> Any:
        iq, oq = module.in_qparams, module.out_qparams
        opset = _opset()

        def quant(v: Any, qp: Any) -> Any:
            s = g.op("Constant", value_t=torch.tensor(qp.scale, dtype=torch.float32))
            zdt = _TORCH_ZP[qp.dtype]
            z = g.op("Constant", value_t=torch.tensor(qp.zero_point, dtype=zdt))
            q = g.op("QuantizeLinear", v, s, z)
            if qp.code_bits is not None:
                lo = g.op("Constant", value_t=torch.tensor(qp.qmin, dtype=zdt))
                hi = g.op("Constant", value_t=torch.tensor(qp.qmax, dtype=zdt))
                q = g.op("Clip", q, lo, hi)
            return g.op("DequantizeLinear", q, s, z)

        xh = quant(x, iq)
        y = _gelu_nodes(g, xh, module.form, opset)
        return quant(y, oq)


def _opset() -> int:
    try:
        from torch.onnx._globals import GLOBALS

        return int(GLOBALS.export_onnx_opset_version)
    except (ImportError, AttributeError):  # pragma: no cover - torch internals moved
        return 17


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
    module.spec()  # the table of the current scales
    out: torch.Tensor = _QdqGelu.apply(x, module)
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
    proto = onnx.load(str(path))
    if proto.ir_version > max_ir_version:
        proto.ir_version = max_ir_version
        onnx.save(proto, str(path))
