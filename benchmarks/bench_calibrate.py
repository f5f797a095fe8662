"""Benchmark ``gelu-quant calibrate`` on all-MiniLM-L6-v2 (batch 16 x 128 tokens).

Measured side by side in one run, each configuration in its own subprocess (so peak RSS,
``ru_maxrss``, is that configuration's own):

- ``plain``: plain ORT inference of the model over the data as a user runs it (default session
  options but the thread count; the same batches from the same .npz data source), session
  creation included;
- ``calibrate``: our streaming calibration over the same data with every range method on
  (histogram statistics, then minmax / percentile / entropy / mse ranges);
- ``ort-entropy``: ONNX Runtime's ``create_calibrator(..., CalibrationMethod.Entropy)`` restricted
  to the GELU nodes (``op_types_to_calibrate``: ``Erf`` for the opset-17 export, whose GELU is the
  Erf pattern — its input and output have the GELU's shape — or ``Gelu`` for ``--variant opset20``)
  and default options, at the smallest size only by default (it keeps every tensor in memory).

Sizes default to 512 and 2048 samples. Plain and calibrate alternate ``--repeats`` times at each
size. Three ratios are printed, each from the fastest run of either configuration (the machine
may be shared): wall time of the whole job (calibrate: loading, GELU discovery, fingerprint,
probe session, batches, all range methods), process CPU time (less sensitive to other load on
the machine) and the batch loop alone; beside the wall ratio, the median of the side-by-side
pairs' ratios. Targets: calibrate <= 1.3x plain inference (per-channel histograms included);
peak memory at 2048 samples <= 1.1x that at 512.

``--no-sample`` adds a calibrate run without the row sample (``--sample-rows 0``), to see what
the consumer correction's sample costs. ``--numpy-stats`` adds a calibrate run with the numpy
statistics instead of the compiled kernel (``GELU_QUANT_STATS_BACKEND=numpy``). Fast mode:
``--sizes 64,128 --repeats 1 --ort-sizes 64``.

Usage: ``python benchmarks/bench_calibrate.py [--sizes 512,2048] [--threads 2] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 16
SEQ = 128


def _data(path: Path, samples: int) -> None:
    from gelu_quant.models.corpus import stdlib_sentences
    from gelu_quant.models.minilm import tokenize

    texts = stdlib_sentences("all")
    if len(texts) < samples:
        texts = (texts * (samples // len(texts) + 1))[:samples]
    np.savez(path, **tokenize(texts[:samples], SEQ))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_plain(model: str, data: str, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    from gelu_quant.calib.data import model_input_specs, open_data_source

    t0, c0 = time.perf_counter(), time.process_time()
    # ORT as a user runs it: default session options, only the thread count set
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    source = open_data_source(data, model_input_specs(model), batch_size=BATCH)
    t1 = time.perf_counter()
    n = 0
    for feed in source:
        session.run(None, feed)
        n += 1
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "loop_seconds": t2 - t1,
        "cpu_seconds": time.process_time() - c0,
        "batches": n,
    }


def child_calibrate(
    model: str, data: str, threads: int, workers: int | None = None, sample_rows: int | None = None
) -> dict[str, Any]:
    from gelu_quant.calib.calibration import collect_stats
    from gelu_quant.calib.ranges_file import MethodParams
    from gelu_quant.calib.stats import backend

    t0, c0 = time.perf_counter(), time.process_time()
    extra = {} if sample_rows is None else {"sample_rows": sample_rows}
    sf = collect_stats(model, data, batch_size=BATCH, threads=threads, workers=workers, **extra)
    t1 = time.perf_counter()
    ranges = sf.to_ranges("minmax", MethodParams())
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "cpu_seconds": time.process_time() - c0,
        "loop_seconds": sf.collected.seconds,
        "setup_seconds": t1 - t0 - sf.collected.seconds,
        "ranges_seconds": t2 - t1,
        "batches": sf.collected.batches,
        "sites": len(ranges.sites),
        "stats_backend": backend(),
    }


def child_ort_entropy(model: str, data: str, threads: int, op_type: str) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(next(iter(arrays.values())))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= n:
                return None
            feed = {k: v[self.i : self.i + BATCH] for k, v in arrays.items()}
            self.i += BATCH
            return feed

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cal = create_calibrator(
            model,
            op_types_to_calibrate=[op_type],
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
        )
        cal.collect_data(Reader())
        ranges = cal.compute_data()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tensors": len(ranges.data)}


def run_child(kind: str, model: str, data: str, threads: int, op_type: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model",
        model,
        "--data-file",
        data,
        "--threads",
        str(threads),
        "--op-type",
        op_type,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return {
            "error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1],
            "returncode": p.returncode,
        }
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,2048", help="sample counts, comma separated")
    ap.add_argument(
        "--ort-sizes",
        default=None,
        help="sizes for ORT's Entropy calibrator (default: the smallest size; '' to skip)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="plain/calibrate runs per size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="opset17", help="MiniLM export variant")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument(
        "--numpy-stats",
        action="store_true",
        help="also run calibrate with the numpy statistics instead of the compiled kernel",
    )
    ap.add_argument(
        "--no-sample",
        action="store_true",
        help="also run calibrate without the row sample (--sample-rows 0), side by side",
    )
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="also run calibrate with the statistics updated in the calling thread",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--op-type", default="Erf", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        if a.child == "plain":
            res = child_plain(a.model, a.data_file, a.threads)
        elif a.child == "calibrate":
            res = child_calibrate(a.model, a.data_file, a.threads)
        elif a.child == "calibrate-sequential":
            res = child_calibrate(a.model, a.data_file, a.threads, workers=0)
        elif a.child == "calibrate-nosample":
            res = child_calibrate(a.model, a.data_file, a.threads, sample_rows=0)
        elif a.child == "calibrate-numpy":
            os.environ["GELU_QUANT_STATS_BACKEND"] = "numpy"
            res = child_calibrate(a.model, a.data_file, a.threads)
        else:
            res = child_ort_entropy(a.model, a.data_file, a.threads, a.op_type)
        res["peak_rss_mb"] = _peak_mb()
        print(json.dumps(res))
        return 0

    from gelu_quant.models.minilm import minilm_onnx

    model = str(minilm_onnx(a.variant))
    op_type = "Gelu" if a.variant == "opset20" else "Erf"
    sizes = [int(s) for s in a.sizes.split(",") if s]
    ort_sizes = (
        [min(sizes)] if a.ort_sizes is None else [int(s) for s in a.ort_sizes.split(",") if s]
    )
    results: dict[str, Any] = {
        "model": a.variant,
        "batch": BATCH,
        "seq": SEQ,
        "threads": a.threads,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            data = os.path.join(tmp, f"data{n}.npz")
            _data(Path(data), n)
            kinds = ["plain", "calibrate"] + (["calibrate-sequential"] if a.sequential else [])
            kinds += ["calibrate-numpy"] if a.numpy_stats else []
            kinds += ["calibrate-nosample"] if a.no_sample else []
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for _ in range(a.repeats):
                for kind in kinds:
                    r = run_child(kind, model, data, a.threads, op_type)
                    runs[kind].append(r)
                    print(f"[{n} samples] {kind}: {r}", file=sys.stderr)
            entry: dict[str, Any] = {"runs": runs}
            ok = all("error" not in r for rs in runs.values() for r in rs)
            if ok:
                plain = min(r["seconds"] for r in runs["plain"])
                calib = min(r["seconds"] for r in runs["calibrate"])
                loop_ratio = min(r["loop_seconds"] for r in runs["calibrate"]) / min(
                    r["loop_seconds"] for r in runs["plain"]
                )
                cpu_ratio = min(r["cpu_seconds"] for r in runs["calibrate"]) / min(
                    r["cpu_seconds"] for r in runs["plain"]
                )
                if a.no_sample:
                    ns = runs["calibrate-nosample"]
                    entry["nosample_time_ratio"] = min(r["seconds"] for r in ns) / plain
                if a.numpy_stats:
                    npy = runs["calibrate-numpy"]
                    entry["numpy_stats_time_ratio"] = min(r["seconds"] for r in npy) / plain
                if a.sequential:
                    seq = runs["calibrate-sequential"]
                    entry["sequential_time_ratio"] = min(r["seconds"] for r in seq) / plain
                    entry["sequential_cpu_time_ratio"] = min(r["cpu_seconds"] for r in seq) / min(
                        r["cpu_seconds"] for r in runs["plain"]
                    )
                paired = sorted(
                    c["seconds"] / p["seconds"]
                    for p, c in zip(runs["plain"], runs["calibrate"], strict=True)
                )
                entry.update(
                    plain_s=plain,
                    calibrate_s=calib,
                    time_ratio=calib / plain,
                    paired_time_ratio_median=float(np.median(paired)),
                    loop_time_ratio=loop_ratio,
                    cpu_time_ratio=cpu_ratio,
                    plain_peak_mb=max(r["peak_rss_mb"] for r in runs["plain"]),
                    calibrate_peak_mb=max(r["peak_rss_mb"] for r in runs["calibrate"]),
                )
            if n in ort_sizes:
                r = run_child("ort-entropy", model, data, a.threads, op_type)
                print(f"[{n} samples] ort-entropy: {r}", file=sys.stderr)
                entry["ort_entropy"] = r
            results["sizes"][n] = entry
    if len(sizes) >= 2:
        lo, hi = results["sizes"][min(sizes)], results["sizes"][max(sizes)]
        if "calibrate_peak_mb" in lo and "calibrate_peak_mb" in hi:
            results["memory_ratio_largest_vs_smallest"] = (
                hi["calibrate_peak_mb"] / lo["calibrate_peak_mb"]
            )
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    backends = sorted(
        {
            r.get("stats_backend", "?")
            for e in results["sizes"].values()
            for r in e["runs"]["calibrate"]
        }
    )
    print(
        f"all-MiniLM-L6-v2 ({a.variant}), batch {BATCH} x {SEQ} tokens, {a.threads} threads, "
        f"statistics: {', '.join(backends)}"
    )
    print(
        f"{'samples':>8} {'plain s':>9} {'calib s':>9} {'ratio':>6} {'plain MB':>9} "
        f"{'calib MB':>9} {'ORT-entropy s':>14} {'ORT MB':>8}"
    )
    for n, e in results["sizes"].items():
        o = e.get("ort_entropy", {})
        ort_s = f"{o['seconds']:.1f}" if "seconds" in o else ("failed" if o else "-")
        ort_mb = f"{o['peak_rss_mb']:.0f}" if "peak_rss_mb" in o else "-"
        if "time_ratio" in e:
            print(
                f"{n:>8} {e['plain_s']:>9.1f} {e['calibrate_s']:>9.1f} {e['time_ratio']:>6.2f} "
                f"{e['plain_peak_mb']:>9.0f} {e['calibrate_peak_mb']:>9.0f} {ort_s:>14} "
                f"{ort_mb:>8}"
            )
        else:
            print(f"{n:>8} failed: {e['runs']}")
    if "memory_ratio_largest_vs_smallest" in results:
        print(
            f"calibrate peak memory {max(sizes)} vs {min(sizes)} samples: "
            f"{results['memory_ratio_largest_vs_smallest']:.3f}x (target <= 1.1)"
        )
    for n, e in results["sizes"].items():
        if "time_ratio" in e:
            print(
                f"[{n} samples] calibrate / plain inference: wall {e['time_ratio']:.2f}x "
                f"(target <= 1.3; median of the {a.repeats} side-by-side pairs "
                f"{e['paired_time_ratio_median']:.2f}x), CPU {e['cpu_time_ratio']:.2f}x, batch "
                f"loop only {e['loop_time_ratio']:.2f}x"
            )
        if "nosample_time_ratio" in e:
            print(
                f"[{n} samples] without the row sample (--sample-rows 0): wall "
                f"{e['nosample_time_ratio']:.2f}x"
            )
        if "numpy_stats_time_ratio" in e:
            print(
                f"[{n} samples] with the numpy statistics instead of the compiled kernel: wall "
                f"{e['numpy_stats_time_ratio']:.2f}x"
            )
        if "sequential_time_ratio" in e:
            print(
                f"[{n} samples] statistics in the calling thread (no overlap): wall "
                f"{e['sequential_time_ratio']:.2f}x, CPU {e['sequential_cpu_time_ratio']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
