"""Accuracy drop of the digits ViT (real images, tanh GELUs) for the table targets of issue 14.

Calibrates on the training split, converts with each configuration, and scores top-1 accuracy
on the 540 held-out test images against the fp32 model, in ONNX Runtime.

    python benchmarks/accuracy_digits_vit.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.digits_vit import digits_test_data, digits_train_data, digits_vit_path

CONFIGS = [
    ("int8-lut", 1),
    ("int8-lut", 2),
    ("int8-lut", 4),
    ("int8-lut", 8),
    ("int8-lut-fp16out", 1),
    ("int8-lut-fp16out", 8),
]


def main() -> int:
    model = digits_vit_path()
    feeds, labels = digits_test_data()

    def accuracy(path: Path) -> float:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = s.run(None, {"pixels": feeds["pixels"]})[0]
        return float(np.mean(np.argmax(logits, axis=1) == labels))

    with tempfile.TemporaryDirectory(prefix="gq-vit-") as folder:
        d = Path(folder)
        np.savez(d / "cal.npz", pixels=digits_train_data()[0])
        calibrate_model(model, d / "cal.npz", d / "r.json")
        base = accuracy(model)
        print(f"fp32 accuracy {base:.4f} on {labels.size} test images")
        for target, groups in CONFIGS:
            out = d / "m.onnx"
            convert_file(
                model, out, ConvertConfig(target, groups=groups), ranges=load_ranges(d / "r.json")
            )
            a = accuracy(out)
            print(f"{target:<18} groups {groups}: {a:.4f}  drop {100 * (base - a):+.2f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
