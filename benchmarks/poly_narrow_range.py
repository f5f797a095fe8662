"""Narrow-range models converted to polynomials from their own calibration.

Issue 12: a model whose GELU inputs lie within about ±0.6, calibrated on its own data and
converted to ``fp16-poly`` / ``fp32-poly``, must be off by the approximation's error, not by
wrong tails. Two models:

* ``synthetic``: ``y = 3·Gelu(0.2·x)`` (opset 20), calibrated on ``x`` ~ N(0, 1) clipped to ±3
  (GELU inputs within ±0.6), evaluated on held-out ``x`` ~ N(0, 1.2) clipped to ±3.5 (inputs
  beyond the calibrated range included). Oracle: ``3·GELU(p)`` in float64 from ``math.erfc``.
* ``digits-vit``: the committed digits ViT fixture (opset 17 erf GELUs), calibrated on the
  first half of its test split, evaluated on the second half. Oracle: the original model in ORT.

Printed per model and target: the calibrated range of the first site, the spec used, and the
output error: max |converted - oracle| / max |oracle| and the largest elementwise relative error
where |oracle| >= 1e-3 · max |oracle|. Run: ``python benchmarks/poly_narrow_range.py``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.digits_vit import digits_test_data, digits_vit_path


def synthetic_model() -> onnx.ModelProto:
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "a"], ["p"], name="scale_in"),
            helper.make_node("Gelu", ["p"], ["g"], name="gelu"),
            helper.make_node("Mul", ["g", "b"], ["y"], name="scale_out"),
        ],
        "narrow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [
            numpy_helper.from_array(np.array(0.2, np.float32), "a"),
            numpy_helper.from_array(np.array(3.0, np.float32), "b"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, feeds)[0], dtype=np.float64)


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    scale = float(np.abs(want).max())
    big = np.abs(want) >= 1e-3 * scale
    return float(np.abs(got - want).max() / scale), float(
        (np.abs(got - want)[big] / np.abs(want[big])).max()
    )


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        onnx.save(synthetic_model(), d / "synthetic.onnx")
        calib = np.clip(rng.normal(0.0, 1.0, (256, 64)), -3, 3).astype(np.float32)
        held = np.clip(rng.normal(0.0, 1.2, (256, 64)), -3.5, 3.5).astype(np.float32)
        np.savez(d / "synthetic_calib.npz", x=calib)
        p = (held * np.float32(0.2)).astype(np.float64)
        oracle = 3.0 * np.vectorize(lambda v: 0.5 * v * math.erfc(-v / math.sqrt(2.0)))(p)
        pixels = digits_test_data()[0]["pixels"]
        half = pixels.shape[0] // 2
        np.savez(d / "vit_calib.npz", pixels=pixels[:half])
        vit_feeds = {"pixels": pixels[half:]}
        vit_oracle = run(digits_vit_path(), vit_feeds)
        cases = [
            ("synthetic", d / "synthetic.onnx", d / "synthetic_calib.npz", {"x": held}, oracle),
            ("digits-vit", digits_vit_path(), d / "vit_calib.npz", vit_feeds, vit_oracle),
        ]
        print("| model | calibrated range (site 0) | target | spec | max abs err / max |out| | "
              "max rel err (|out| >= 1e-3 max) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for name, model, data, feeds, want in cases:
            rf = calibrate_model(model, data, d / f"{name}.ranges.json", method="minmax")
            lo, hi = rf.range_for(rf.site_ids[0])
            for target in ("fp16-poly", "fp32-poly"):
                out = d / f"{name}.{target}.onnx"
                res = convert_file(
                    model,
                    out,
                    ConvertConfig(target),
                    ranges=load_ranges(d / f"{name}.ranges.json"),
                )
                spec = res.manifest.converted[0].spec or {}
                k, deg, a0, b0 = spec["segments"], spec["degree"], spec["lo"], spec["hi"]
                shape = f"{k} x {deg} on [{a0:.4g}, {b0:.4g}]"
                a, r = errors(run(out, feeds), want)
                print(f"| {name} | [{lo:.4g}, {hi:.4g}] | {target} | {shape} | {a:.2e} | {r:.2e} |")


if __name__ == "__main__":
    main()
