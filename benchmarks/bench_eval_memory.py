"""Peak memory of ``evaluate`` at 512 and 2048 samples: the metrics stream, so it stays flat.

Builds all-MiniLM-L6-v2 (opset 17) and its ``int8-lut`` conversion (one fixed range, no
calibration needed for a memory measurement), then evaluates 512 and 2048 corpus sentences of
128 tokens in two fresh subprocesses, side by side, and prints each one's peak RSS and the ratio.
For scale it also prints what keeping both models' outputs for all samples would take.

    /work/venv/bin/python benchmarks/bench_eval_memory.py [--threads 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

SEQ = 128
SIZES = (512, 2048)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(n: int, ref: Path, cand: Path, threads: int, batch_size: int) -> None:
    from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
    from gelu_quant.models.corpus import stdlib_sentences
    from gelu_quant.models.minilm import tokenize

    sentences = stdlib_sentences("all", limit=n)
    if len(sentences) < n:
        raise SystemExit(f"corpus has only {len(sentences)} sentences, need {n}")

    def batches():  # tokenized lazily, one batch at a time
        for i in range(0, n, batch_size):
            yield tokenize(sentences[i : i + batch_size], SEQ)

    before = _peak_rss_mb()
    t0 = time.perf_counter()
    rep = evaluate(ref, cand, batches(), EvalConfig(classification_outputs=(), threads=threads))
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "samples": rep.samples,
                "peak_rss_before_mb": before,
                "peak_rss_mb": _peak_rss_mb(),
                "seconds": secs,
                "sites": len(rep.sites),
                "cosine_mean": rep.output("sentence_embedding").cosine_mean,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--child", nargs=3, metavar=("N", "REF", "CAND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, ref, cand = args.child
        child(int(n), Path(ref), Path(cand), args.threads, args.batch_size)
        return

    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.models.minilm import minilm_onnx

    src = minilm_onnx("opset17")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        dst = Path(tmp) / "minilm.gq.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_file(src, dst, ConvertConfig("int8-lut", range=(-12.0, 12.0)))
        results = {}
        for n in SIZES:
            cmd = [
                sys.executable, __file__, "--threads", str(args.threads),
                "--batch-size", str(args.batch_size), "--child", str(n), str(src), str(dst),
            ]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[n] = json.loads(out.strip().splitlines()[-1])
    print(f"all-MiniLM-L6-v2 int8-lut vs fp32, {SEQ} tokens, batch {args.batch_size}, "
          f"{args.threads} threads; 6 GELU sites probed in both models")  # fmt: skip
    for n in SIZES:
        r = results[n]
        print(
            f"  {n:5d} samples: peak RSS {r['peak_rss_mb']:7.1f} MB "
            f"(after imports {r['peak_rss_before_mb']:6.1f} MB), {r['seconds']:6.1f} s, "
            f"sentence cosine mean {r['cosine_mean']:.5f}"
        )
    a, b = results[SIZES[0]], results[SIZES[1]]
    print(
        f"  peak RSS ratio {SIZES[1]}/{SIZES[0]} samples: {b['peak_rss_mb'] / a['peak_rss_mb']:.3f}"
    )
    growth = b["peak_rss_mb"] - a["peak_rss_mb"]
    print(f"  growth for 4x the samples: {growth:+.1f} MB")
    held = 2 * SIZES[1] * (SEQ * 384 + 384) * 4 / 2**20
    print(f"  (keeping both models' outputs for {SIZES[1]} samples would hold {held:.0f} MB)")


if __name__ == "__main__":
    main()
