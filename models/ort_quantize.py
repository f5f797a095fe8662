"""ONNX Runtime's static quantizer in QDQ format, as the MiniLM and architecture exports use it."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def quantize_qdq(
    base: Path,
    folder: Path,
    model_file: str,
    batches: Sequence[dict[str, np.ndarray]],
    opts: Mapping[str, Any],
    **extra: Any,
) -> None:
    """``quantize_static`` of ``base`` into ``folder/model_file``, calibrated on ``batches``,
    with ``opts``' format, types and method (``extra`` goes to the quantizer as it is); whatever
    else the quantizer leaves in ``folder`` (its augmented model) is removed."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(
            str(base),
            str(folder / model_file),
            Reader(),
            quant_format=getattr(QuantFormat, opts["quant_format"]),
            activation_type=getattr(QuantType, opts["activation_type"]),
            weight_type=getattr(QuantType, opts["weight_type"]),
            calibrate_method=getattr(CalibrationMethod, opts["calibrate_method"]),
            **extra,
        )
    for leftover in folder.iterdir():
        if leftover.name != model_file:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
