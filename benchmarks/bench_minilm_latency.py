"""Latency of all-MiniLM-L6-v2 converted by gelu-quant against the model it came from, in ORT.

Each export variant is converted (``int8-lut`` with one range for all sites, QDQ sites from their
own scales; ``fp16-poly``), then every model runs on the same batch, interleaved round by round,
at 1 and 2 intra-op threads. Printed: best latency and ``converted / original`` (the target is
<= 1.05).

With ``--groups K`` the float variants are also converted to grouped tables (``int8-lut
--groups K``, calibrated on 64 sentences of the built-in corpus), as they are and with
``--fold-scales``.

Usage: ``python benchmarks/bench_minilm_latency.py [--batch 1] [--seq 128] [--rounds 15]
[--variants opset17 opset20 qdq] [--groups 8]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.minilm import INPUT_NAMES, minilm_onnx


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no spin-waiting: idle thread pools of the other sessions would steal the CPU
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": np.zeros((batch, seq), np.int64),
    }


def _ranges(model: Path, out: Path, tmp: Path) -> Path:
    from gelu_quant.calib.calibration import calibrate_model
    from gelu_quant.models.corpus import write_corpus
    from gelu_quant.models.minilm import minilm_tokenizer_dir

    text = tmp / "calibration.txt"
    if not text.exists():
        write_corpus(text, "calibration", 64)
    calibrate_model(model, text, out, tokenizer=minilm_tokenizer_dir(), batch_size=16)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", default=["opset17", "opset20", "qdq"])
    ap.add_argument("--range", type=float, nargs=2, default=[-12.0, 12.0])
    ap.add_argument("--groups", type=int, default=0, help="also grouped tables with K groups")
    ap.add_argument(
        "--lut-bodies", nargs="+", default=["auto"], help="int8-lut bodies to compare (auto, ...)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gq-bench-") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Convert into ``tmp`` and measure."""
    pairs: list[tuple[str, Path, Path]] = []  # (label, original, converted)
    for v in args.variants:
        src = minilm_onnx(v)
        targets = [("int8-lut", b) for b in args.lut_bodies]
        if v != "qdq":
            targets.append(("fp16-poly", "auto"))
        for t, body in targets:
            out = tmp / f"{v}-{t}-{body}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cfg = ConvertConfig(
                    target=t, range=None if v == "qdq" else tuple(args.range), lut_body=body
                )
                res = convert_file(src, out, cfg)
            bodies = sorted({s.body or "" for s in res.manifest.converted})
            pairs.append((f"{v} -> {t} ({'/'.join(bodies)})", src, out))
        if args.groups > 1 and v != "qdq":
            ranges = _ranges(src, tmp / f"{v}-ranges.json", tmp)
            for body in args.lut_bodies:
                for fold in (False, True):
                    out = tmp / f"{v}-g{args.groups}-{body}-{fold}.onnx"
                    cfg = ConvertConfig(
                        target="int8-lut", groups=args.groups, lut_body=body, fold_scales=fold
                    )
                    res = convert_file(src, out, cfg, ranges=load_ranges(ranges))
                    bodies = sorted({s.body or "" for s in res.manifest.converted})
                    label = f"{v} -> g{args.groups}{' folded' if fold else ''} ({'/'.join(bodies)})"
                    pairs.append((label, src, out))
    x = feeds(args.batch, args.seq)
    print(
        f"all-MiniLM-L6-v2, batch {args.batch} x {args.seq} tokens, best of {args.rounds} "
        f"interleaved rounds, onnxruntime {ort.__version__}"
    )
    head = "".join(f"{f'{t}thr orig ms':>14}{'conv ms':>9}{'ratio':>7}" for t in args.threads)
    print(f"{'model':<40}{head}")
    rows: dict[str, str] = {label: "" for label, _, _ in pairs}
    for th in args.threads:
        paths = {p for _, a, b in pairs for p in (a, b)}
        sessions = {p: session(p, th) for p in paths}
        inputs = {
            p: {i.name: x[i.name] for i in s.get_inputs() if i.name in INPUT_NAMES}
            for p, s in sessions.items()
        }
        for p, s in sessions.items():
            s.run(None, inputs[p])
        best = dict.fromkeys(sessions, float("inf"))
        for _ in range(args.rounds):
            for p, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, inputs[p])
                best[p] = min(best[p], time.perf_counter() - t0)
        for label, a, b in pairs:
            rows[label] += f"{best[a] * 1e3:>14.2f}{best[b] * 1e3:>9.2f}{best[b] / best[a]:>7.3f}"
    for label, cells in rows.items():
        print(f"{label:<40}{cells}")


if __name__ == "__main__":
    main()
