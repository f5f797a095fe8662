"""Accuracy of converted all-MiniLM-L6-v2 on held-out text: the ablation table of issue 14.

Calibrates the opset-17 export on the demo's calibration half (first N sentences), converts every
GELU with each configuration, runs the converted model in ONNX Runtime on the demo's evaluation
half (never calibrated on) and prints, against fp32: 1 − mean cosine of the sentence embeddings,
the worst cosine, and nearest-neighbour agreement (the fraction of evaluation sentences whose
most similar other sentence is the same as with fp32).

    python benchmarks/accuracy_minilm.py                        # the default configurations
    python benchmarks/accuracy_minilm.py --configs int8-lut:minmax:1 int8-lut:entropy:8
    python benchmarks/accuracy_minilm.py --json results.json

A configuration is ``TARGET:METHOD:GROUPS[:nocut][:nocorr]`` (GROUPS > 1: grouped tables, METHOD
each group's range method, ``convert --group-method``;
``nocut``: the calibrated range as it is, without cutting GELU's negative tail; ``nocorr``: the
MatMul after each table as it is, without the consumer correction).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.corpus import stdlib_sentences
from gelu_quant.models.minilm import minilm_onnx, minilm_tokenizer_dir, tokenize

DEFAULT_CONFIGS = [
    "int8-lut:minmax:1:nocut:nocorr",
    "int8-lut:entropy:1:nocut:nocorr",
    "int8-lut:minmax:1:nocorr",
    "int8-lut:mse:1:nocorr",
    "int8-lut:entropy:1:nocorr",
    "int8-lut:minmax:1",
    "int8-lut:percentile:1",
    "int8-lut:mse:1",
    "int8-lut:entropy:1",
    "int8-lut:minmax:8:nocorr",
    "int8-lut:minmax:2",
    "int8-lut:minmax:4",
    "int8-lut:minmax:8",
    "int8-lut-fp16out:mse:1:nocorr",
    "int8-lut-fp16out:minmax:8:nocorr",
    "int8-lut-fp16out:minmax:1",
    "int8-lut-fp16out:mse:1",
    "int8-lut-fp16out:minmax:8",
    "int8-interp32:minmax:1",
    "int6-lut-int8out:minmax:32",
]


def embeddings(model: Path, texts: list[str], batch: int = 32) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    out = []
    for i in range(0, len(texts), batch):
        f = tokenize(texts[i : i + batch])
        out.append(s.run(["sentence_embedding"], {k: f[k] for k in names})[0].astype(np.float64))
    return np.concatenate(out)


def metrics(ref: np.ndarray, emb: np.ndarray) -> dict[str, float]:
    cos = np.sum(ref * emb, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(emb, axis=1)
    sr, se = ref @ ref.T, emb @ emb.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(se, -np.inf)
    nn = float(np.mean(np.argmax(sr, 1) == np.argmax(se, 1)))
    return {"one_minus_cos": 1.0 - float(cos.mean()), "worst_cos": float(cos.min()), "nn": nn}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    ap.add_argument("--calibration", type=int, default=512)
    ap.add_argument("--evaluation", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = minilm_onnx("opset17")
    cal = stdlib_sentences("calibration", args.calibration)
    ev = stdlib_sentences("evaluation", args.evaluation)
    assert not set(cal) & set(ev)
    ref = embeddings(model, ev)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gq-acc-") as d:
        tmp = Path(d)
        (tmp / "cal.txt").write_text("".join(s + "\n" for s in cal), encoding="utf-8")
        t = time.perf_counter()
        ranges = tmp / "ranges.json"
        calibrate_model(
            model, tmp / "cal.txt", ranges, tokenizer=minilm_tokenizer_dir(), batch_size=16
        )
        print(f"calibrated in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        for cfg in args.configs:
            target, method, groups, *flags = cfg.split(":")
            out = tmp / "m.gq.onnx"
            k = int(groups)
            cc = ConvertConfig(  # grouped tables: METHOD is each group's range method
                target=target,
                method=method if k == 1 else None,
                groups=k,
                group_method=method if k > 1 else "minmax",
                tail_cut="nocut" not in flags,
                correct_consumers="nocorr" not in flags,
            )
            convert_file(model, out, cc, ranges=load_ranges(ranges))
            m = metrics(ref, embeddings(out, ev))
            rows.append({"config": cfg, **m})
            print(
                f"{cfg:<28} 1-cos {m['one_minus_cos']:.2e}  worst {m['worst_cos']:.5f}  "
                f"nn {m['nn']:.3f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
