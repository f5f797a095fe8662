"""Digests of conversions, to check a refactor changes nothing: run at two commits and compare.

Converts every MiniLM export (``opset17``, ``opset20``, ``dynamo``, ``ort-optimized``, ``qdq``,
``tanh17``) with a set of targets (one range for all sites, a ranges file, grouped tables,
``--expand``) and every third-party architecture export (``models/architectures.py``) with
``int8-lut``, ``fp32-poly`` and ``fp16-poly``; records for each: sha256 of the model file, of its
nodes, initializers and functions, the op types, and of the ORT outputs on fixed inputs (or the
refusal message). Then ``--compare A.json B.json`` prints what differs.

Usage: ``python benchmarks/conversion_digests.py OUT.json --ranges RANGES.json`` (a ranges file of
the opset-17 MiniLM export: ``gelu-quant calibrate``), ``python benchmarks/conversion_digests.py
--compare BEFORE.json AFTER.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models import architectures as A
from gelu_quant.models.minilm import minilm_onnx, tokenize

TARGETS = [
    "int8-lut",
    "uint8-lut",
    "int8-lut-fp16out",
    "int16-lut",
    "int8-interp32",
    "fp16-poly",
    "fp32-poly",
    "fp32-tanh-formula",
    "int8-igelu",
    "int4-lut",
]


def _digest(parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def _outputs(model: Path, feeds: dict[str, np.ndarray]) -> str:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    outs = s.run(None, {k: v for k, v in feeds.items() if k in names})
    return _digest(np.ascontiguousarray(a).tobytes() for a in outs)


def _convert(src: Path, cfg: ConvertConfig, feeds: Any, dst: Path, ranges: Any) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_file(src, dst, cfg, ranges=ranges)
    except Exception as e:  # the refusal is part of the behaviour
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    m = onnx.load(str(dst), load_external_data=False)
    ser = [n.SerializeToString(deterministic=True) for n in m.graph.node]
    return {
        "model": _digest([dst.read_bytes()]),
        "nodes": _digest(ser),
        "inits": _digest(t.SerializeToString(deterministic=True) for t in m.graph.initializer),
        "funcs": _digest(f.SerializeToString(deterministic=True) for f in m.functions),
        "ops": sorted({n.op_type for n in m.graph.node}),
        "outputs": _outputs(dst, feeds),
    }


def collect(ranges_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="gq-digests-"))
    feeds = tokenize(["The cat sat on the mat.", "A quick brown fox jumps over the dog."], 32)
    for v in ("opset17", "opset20", "dynamo", "ort-optimized", "qdq", "tanh17"):
        src = minilm_onnx(v)
        rng = None if v == "qdq" else (-12.0, 12.0)
        for t in ["int8-lut", "int8-lut-fp16out"] if v == "qdq" else TARGETS:
            cfg = ConvertConfig(target=t, range=rng)
            out[f"minilm-{v}/{t}"] = _convert(src, cfg, feeds, tmp / f"{v}-{t}.onnx", None)
        if v == "qdq":
            continue
        rf = load_ranges(ranges_path)
        for label, cfg in (
            ("int8-lut-ranges", ConvertConfig(target="int8-lut", force=True)),
            ("int8-lut-g8", ConvertConfig(target="int8-lut", groups=8, force=True)),
        ):
            out[f"minilm-{v}/{label}"] = _convert(src, cfg, feeds, tmp / f"{v}-{label}.onnx", rf)
        cfg = ConvertConfig(target="int8-lut", range=rng, expand=True)
        out[f"minilm-{v}/int8-lut-expand"] = _convert(src, cfg, feeds, tmp / f"{v}-x.onnx", None)
    for name in A.ARCHITECTURES:
        for e in A.EXPORTERS:
            try:
                src = A.export_onnx(name, e)
            except Exception as exc:  # an exporter limitation, recorded as such
                out[f"{name}-{e}"] = {"export": type(exc).__name__}
                continue
            f = A.make_inputs(name, 0)
            for t in ("int8-lut", "fp32-poly", "fp16-poly"):
                cfg = ConvertConfig(target=t, range=(-8.0, 8.0))
                out[f"{name}-{e}/{t}"] = _convert(src, cfg, f, tmp / f"{name}-{e}-{t}.onnx", None)
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> None:
    c: Counter[str] = Counter()
    which: dict[str, list[str]] = {}
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, {}), b.get(k, {})
        if "error" in x or "error" in y:
            c["refusals: same" if x.get("error") == y.get("error") else "refusals: differ"] += 1
            continue
        if "export" in x or "export" in y:
            continue
        c["conversions compared"] += 1
        for f in ("model", "nodes", "inits", "funcs", "ops", "outputs"):
            if x.get(f) != y.get(f):
                c[f"{f} differ"] += 1
                which.setdefault(f, []).append(k)
    for k, n in sorted(c.items()):
        print(f"{k:<24} {n}")
    for f, ks in which.items():
        print(f"{f} differ in: {', '.join(ks[:10])}{' …' if len(ks) > 10 else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--ranges", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    args = ap.parse_args()
    if args.compare:
        compare(*(json.loads(p.read_text()) for p in args.compare))
        return
    if args.out is None or args.ranges is None:
        ap.error("give OUT.json and --ranges RANGES.json (or --compare A.json B.json)")
    args.out.write_text(json.dumps(collect(args.ranges), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
