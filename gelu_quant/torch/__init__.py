"""Quantization-aware training with the exact GELU tables, in PyTorch (needs the ``models`` extra).

The core of gelu-quant never imports torch; everything that does lives here:

* :class:`GeluFakeQuant` — a GELU module whose forward is the table spec bit for bit, with a
  straight-through / LSQ backward (:mod:`gelu_quant.torch.fakequant`), and
  :class:`GroupedGeluFakeQuant`, its grouped-table (one table per group of channels) variant
  (:mod:`gelu_quant.torch.grouped`);
* :func:`prepare_qat`, :func:`calibrate_ranges` — swap every GELU of a model, initialised from a
  ranges file or calibrated in PyTorch (:mod:`gelu_quant.torch.prepare`);
* :func:`export_qat_onnx` — export the trained model as Q/DQ around GELU, which ``gelu-quant
  convert`` collapses into the same tables (:mod:`gelu_quant.torch.onnx_export`).

See ``docs/qat.md``.
"""

from gelu_quant.torch.fakequant import GeluFakeQuant, lsq_fake_quant, torch_gelu
from gelu_quant.torch.grouped import GroupedGeluFakeQuant
from gelu_quant.torch.onnx_export import export_qat_onnx
from gelu_quant.torch.prepare import (
    calibrate_ranges,
    collect_stats,
    fake_quant_modules,
    find_gelus,
    gelu_form_of,
    prepare_qat,
)

__all__ = [
    "GeluFakeQuant",
    "GroupedGeluFakeQuant",
    "calibrate_ranges",
    "collect_stats",
    "export_qat_onnx",
    "fake_quant_modules",
    "find_gelus",
    "gelu_form_of",
    "lsq_fake_quant",
    "prepare_qat",
    "torch_gelu",
]
