"""Low-bit table codes as ONNX INT4/UINT4 tensors against the 8-bit container, and what ONNX
Runtime runs on 4-bit tensors.

Three parts, one run:

1. **ORT's INT4/UINT4 coverage** (CPU provider, this machine's ORT): small models
   ``float -> QuantizeLinear(int4) -> OP -> ...``, each loaded and run with graph optimisations
   off (so a kernel must exist) and on; ``ok`` or the first words of ORT's error.
2. **Model file**: one model converted with ``--target int4-lut`` (default ``--range -4 4``) at
   opset 21 with ``--code-container int4`` (its default table body, and ``--lut-body
   formula``) and ``int8``: file bytes, and per site the bytes of what the site added
   (nodes, initializers, its function), with the outputs checked equal.
3. **Latency**: the conversions run interleaved round by round in ORT (1 intra-op thread),
   best time of each, ratio int8-container / int4 (> 1: INT4 storage faster); then the site
   alone on a float32 tensor of ``--shape`` (default 32x128x1536).

Usage: ``python benchmarks/bench_int4_storage.py [--model digits|minilm] [--rounds 7]
[--shape 32 128 1536]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnx.version_converter
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.graph.convert import ConvertConfig, ConvertResult, convert_model
from gelu_quant.graph.ops.custom_op import DOMAIN


def _session(m: onnx.ModelProto, optimize: bool = True, threads: int = 1) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


# -- 1. coverage ---------------------------------------------------------------------------
def _probe(op: str, four: int) -> onnx.ModelProto:
    """``x -> QuantizeLinear(four-bit) -> op -> DequantizeLinear / Cast -> y``."""
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "s"),
             helper.make_tensor("z", four, [], [0]),
             numpy_helper.from_array(np.array([-1], np.int64), "shape"),
             numpy_helper.from_array(np.array([0, 1], np.int64), "idx"),
             helper.make_tensor("table", four, [2], [1, 2])]  # fmt: skip
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    tail: list[onnx.NodeProto]
    out_t = TensorProto.FLOAT
    dq = helper.make_node("DequantizeLinear", ["r", "s", "z"], ["y"])
    if op in ("Identity", "Transpose", "Flatten", "Squeeze"):
        tail = [helper.make_node(op, ["q"], ["r"]), dq]
    elif op == "Reshape":
        tail = [helper.make_node("Reshape", ["q", "shape"], ["r"]), dq]
    elif op == "Shape":
        tail = [helper.make_node("Shape", ["q"], ["y"])]
        out_t = TensorProto.INT64
    elif op.startswith("Cast"):
        tail = [helper.make_node("Cast", ["q"], ["c"], to=TensorProto.INT32),
                helper.make_node("Cast", ["c"], ["r"], to=four), dq]  # fmt: skip
    elif op in ("Gather", "GatherElements"):
        tail = [helper.make_node(op, ["table", "idx"], ["r"], axis=0), dq]
    elif op == "Clip":
        tail = [helper.make_node("Clip", ["q"], ["r"]), dq]
    else:  # QuantizeLinear -> DequantizeLinear
        tail = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(
        [q, *tail],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", out_t, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def coverage() -> None:
    print("1. ORT", ort.__version__, "CPU kernels on INT4 / UINT4 tensors (opset 21)")
    print(f"   {'op':<24}{'int4, no opt':<26}{'int4, optimized':<26}uint4, no opt")
    ops = ["Q/DQ", "Cast int32 <-> 4-bit", "Identity", "Reshape", "Shape", "Transpose",
           "Flatten", "Squeeze", "Gather", "GatherElements", "Clip"]  # fmt: skip
    x = np.array([1.0, 2.0], np.float32)
    for op in ops:
        cells = []
        for four, opt in ((TensorProto.INT4, False), (TensorProto.INT4, True),
                          (TensorProto.UINT4, False)):  # fmt: skip
            try:
                _session(_probe(op.split()[0], four), optimize=opt).run(None, {"x": x})
                cells.append("ok")
            except Exception as e:  # ORT's refusals: NOT_IMPLEMENTED, INVALID_GRAPH, …
                msg = " ".join(str(e).split())
                cells.append(
                    "no kernel"
                    if "NOT_IMPLEMENTED" in msg
                    else "type not in schema"
                    if "INVALID_GRAPH" in msg
                    else msg[:24]
                )
        print(f"   {op:<24}{cells[0]:<26}{cells[1]:<26}{cells[2]}")


# -- 2./3. a model ---------------------------------------------------------------------------
def _model(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    if name == "digits":
        from gelu_quant.models.digits_vit import digits_test_data, digits_vit_path

        m = onnx.load(str(digits_vit_path()))
        feeds, _ = digits_test_data()
    else:
        from gelu_quant.models.corpus import stdlib_sentences
        from gelu_quant.models.minilm import minilm_onnx, tokenize

        m = onnx.load(str(minilm_onnx("opset20")))
        feeds = tokenize(stdlib_sentences("evaluation", limit=32), max_length=128)
    return onnx.version_converter.convert_version(m, 21), feeds


def site_bytes(res: ConvertResult) -> dict[str, int]:
    """Serialized bytes of what each site added: its nodes, the initializers they read and
    its op's function."""
    g = res.model.graph
    inits = {t.name: t for t in g.initializer}
    funcs = {f.name: f for f in res.model.functions if f.domain == DOMAIN}
    out = {}
    for rec in res.manifest.converted:
        added = set(rec.added_nodes)
        nodes = [n for n in g.node if n.name in added]
        names = {i for n in nodes for i in n.input if i in inits}
        b = sum(n.ByteSize() for n in nodes) + sum(inits[i].ByteSize() for i in names)
        f = funcs.get(rec.op_type or "")
        out[rec.id] = b + (f.ByteSize() if f is not None else 0)
    return out


def _best_times(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    best = {k: float("inf") for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(rounds):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rng: tuple[float, float],
            rounds: int, label: str) -> None:  # fmt: skip
    configs = {
        "int4 table": ConvertConfig("int4-lut", range=rng, code_container="int4"),
        "int4 formula": ConvertConfig(
            "int4-lut", range=rng, code_container="int4", lut_body="formula"
        ),
        "int8": ConvertConfig("int4-lut", range=rng, code_container="int8"),
    }
    res = {c: convert_model(model, cfg) for c, cfg in configs.items()}
    sess = {c: _session(r.model) for c, r in res.items()}
    outs = {c: s.run(None, feeds)[0] for c, s in sess.items()}
    same = all(np.array_equal(o, outs["int8"]) for o in outs.values())
    print(f"   {label}: outputs equal bit for bit: {same}")
    for c, r in res.items():
        sb = site_bytes(r)
        print(
            f"   {c:>10}: file {len(r.model.SerializeToString())} B; per site "
            + ", ".join(f"{k} {v} B ({r.manifest.site(k).body})" for k, v in sb.items())
        )
    t = _best_times({c: (lambda s=s: s.run(None, feeds)) for c, s in sess.items()}, rounds)
    print(
        f"   latency (best of {rounds}, 1 thread): int8 container {t['int8'] * 1e3:.2f} ms; "
        + ", ".join(
            f"{c} {t[c] * 1e3:.2f} ms (int8/{c} = {t['int8'] / t[c]:.2f})" for c in t if c != "int8"
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["digits", "minilm"], default="digits")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shape", type=int, nargs="+", default=[32, 128, 1536])
    ap.add_argument("--range", type=float, nargs=2, default=[-4.0, 4.0])
    a = ap.parse_args()
    coverage()
    model, feeds = _model(a.model)
    print(f"2./3. {a.model} at opset 21, int4-lut --range {a.range[0]:g} {a.range[1]:g}")
    compare(model, feeds, tuple(a.range), a.rounds, a.model)
    one = onnx.parser.parse_model(
        '<ir_version: 10, opset_import: ["" : 21]> g (float[N] x) => (float[N] y) { y = Gelu(x) }'
    )
    x = np.random.default_rng(0).normal(0.0, 2.0, a.shape).astype(np.float32).reshape(-1)
    shape = "x".join(map(str, a.shape))
    compare(one, {"x": x}, tuple(a.range), a.rounds, f"one site on {shape} float32")


if __name__ == "__main__":
    main()
