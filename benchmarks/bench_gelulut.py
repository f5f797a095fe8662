"""Throughput of the GeluLut bodies in ONNX Runtime against the DQ -> Gelu -> Q they replace.

All candidates run on the same int8 tensor (default 32x128x1536), interleaved round by round, at
1 and 2 intra-op threads; the best time of each is reported with its throughput relative to
``DequantizeLinear -> Gelu -> QuantizeLinear`` (ratio > 1: faster than the baseline).

Candidates:

* ``GeluLut exact/tanh (formula)`` - the default body for GELU tables, proved equal to the table;
* ``GeluLut quick (formula)`` - QuickGELU tables: ``DequantizeLinear -> Mul(1.702) -> Sigmoid
  -> Mul -> QuantizeLinear``, proved equal to the table (any opset), next to the same graph
  written plainly, with ORT's ``com.microsoft.QuickGelu`` kernel, and the GatherElements body
  (what ``auto`` picks for them: faster); ratios are against ``DQ -> Gelu -> Q`` (exact);
* ``GeluLut arbitrary (GatherElements)`` - the general body (a random 256-entry table);
* ``GeluInterpLut 32 (GatherElements)`` - interpolated table, expanded to 256 entries;
* ``GeluLut exact (formula, opset 17)`` - the same table in an opset-17 model (no Gelu op:
  ``Cast -> Mul -> Sub`` and the erf formula, which ORT fuses into its Gelu kernel);
* ``GeluLut arbitrary (Gather)`` - ``--lut-body gather``: ``Cast -> Gather`` (int32 indices);
* ``Cast -> Gather int64`` - the naive body (for scale).

Usage: ``python benchmarks/bench_gelulut.py [--shape 32 128 1536] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.graph.ops import custom_op
from gelu_quant.graph.ops.op_runners import single_op_model
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.table import LutSpec, build_lut


def _plain(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], out_t: int
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.INT8, None)],
        [helper.make_tensor_value_info("y", out_t, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def dq_gelu_q(spec: LutSpec, approximate: str) -> onnx.ModelProto:
    qi, qo = spec.in_qparams, spec.out_qparams
    assert qo is not None
    inits = [
        numpy_helper.from_array(np.float32(qi.scale), "si"),
        numpy_helper.from_array(np.int8(qi.zero_point), "zi"),
        numpy_helper.from_array(np.float32(qo.scale), "so"),
        numpy_helper.from_array(np.int8(qo.zero_point), "zo"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["f"]),
        helper.make_node("Gelu", ["f"], ["g"], approximate=approximate),
        helper.make_node("QuantizeLinear", ["g", "so", "zo"], ["y"]),
    ]
    return _plain(nodes, inits, TensorProto.INT8)


def dq_quick_q(spec: LutSpec, fused: bool) -> onnx.ModelProto:
    """``DequantizeLinear -> x·Sigmoid(1.702x) -> QuantizeLinear`` spelled out, or with ORT's
    ``com.microsoft.QuickGelu`` kernel (``fused``)."""
    qi, qo = spec.in_qparams, spec.out_qparams
    assert qo is not None
    inits = [
        numpy_helper.from_array(np.float32(qi.scale), "si"),
        numpy_helper.from_array(np.int8(qi.zero_point), "zi"),
        numpy_helper.from_array(np.float32(qo.scale), "so"),
        numpy_helper.from_array(np.int8(qo.zero_point), "zo"),
        numpy_helper.from_array(np.float32(1.702), "alpha"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["f"])]
    if fused:
        nodes.append(
            helper.make_node("QuickGelu", ["f"], ["g"], domain="com.microsoft", alpha=1.702)
        )
    else:
        nodes += [
            helper.make_node("Mul", ["f", "alpha"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Mul", ["f", "s"], ["g"]),
        ]
    nodes.append(helper.make_node("QuantizeLinear", ["g", "so", "zo"], ["y"]))
    m = _plain(nodes, inits, TensorProto.INT8)
    if fused:
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def gather_int64(table: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
        helper.make_node("Gather", ["t", "i"], ["y"], axis=0),
    ]
    return _plain(nodes, [numpy_helper.from_array(np.roll(table, -128), "t")], TensorProto.INT8)


def session(m: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no spin-waiting: idle thread pools of the other sessions would steal the CPU
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench(
    models: dict[str, onnx.ModelProto], x: np.ndarray, threads: int, rounds: int
) -> dict[str, float]:
    sessions = {k: session(m, threads) for k, m in models.items()}
    runs: dict[str, Callable[[], object]] = {
        k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()
    }
    for r in runs.values():
        r()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for k, r in runs.items():
            t = time.perf_counter()
            r()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[32, 128, 1536])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=args.shape).astype(np.int8)
    exact = build_lut(in_range=(-9.0, 4.5), form="exact")
    tanh = build_lut(in_range=(-9.0, 4.5), form="tanh")
    arbitrary = LutSpec(
        in_qparams=exact.in_qparams,
        out_dtype="int8",
        out_qparams=exact.out_qparams,
        form="exact",
        table=rng.integers(-128, 128, 256).astype(np.int8),
    )
    quick = build_lut(in_range=(-9.0, 4.5), form="quick")
    interp = build_interp_lut(segments=32, in_range=(-9.0, 4.5))
    ops = {
        "GeluLut exact (formula)": custom_op(exact),
        "GeluLut tanh (formula)": custom_op(tanh),
        "GeluLut quick (formula)": custom_op(quick, lut_body="formula"),
        "GeluLut quick (formula, opset 17)": custom_op(quick, opset=17, lut_body="formula"),
        "GeluLut quick (auto: GatherElements)": custom_op(quick),
        "GeluLut exact (formula, opset 17)": custom_op(exact, opset=17),
        "GeluLut tanh (formula, opset 17)": custom_op(tanh, opset=17, lut_body="formula"),
        "GeluLut tanh (auto, opset 17)": custom_op(tanh, opset=17),
        "GeluLut arbitrary (GatherElements)": custom_op(arbitrary),
        "GeluLut arbitrary (Gather)": custom_op(arbitrary, lut_body="gather"),
        "GeluInterpLut 32 (GatherElements)": custom_op(interp),
    }
    assert ops["GeluLut exact (formula)"].body_kind == "formula"
    assert ops["GeluLut quick (formula)"].body_kind == "formula"
    assert ops["GeluLut quick (auto: GatherElements)"].body_kind == "gather-elements"
    assert ops["GeluLut arbitrary (GatherElements)"].body_kind == "gather-elements"
    assert ops["GeluLut arbitrary (Gather)"].body_kind == "gather"
    models = {
        "DQ->Gelu->Q exact": dq_gelu_q(exact, "none"),
        "DQ->Gelu->Q tanh": dq_gelu_q(tanh, "tanh"),
        "DQ->x*Sigmoid(1.702x)->Q quick": dq_quick_q(quick, fused=False),
        "DQ->ms.QuickGelu->Q quick": dq_quick_q(quick, fused=True),
        **{k: single_op_model(op, shape=args.shape) for k, op in ops.items()},
        "Cast->Gather int64 (naive)": gather_int64(arbitrary.table),
    }
    base_of = {k: ("DQ->Gelu->Q tanh" if "tanh" in k else "DQ->Gelu->Q exact") for k in models}
    print(f"int8 tensor {'x'.join(map(str, args.shape))}, best of {args.rounds} interleaved rounds")
    print(f"onnxruntime {ort.__version__}; ratio = baseline time / candidate time (>1 faster)")
    results = {t: bench(models, x, t, args.rounds) for t in args.threads}
    head = "".join(f"{f'{t} thr ms':>11}{'ratio':>8}" for t in args.threads)
    print(f"{'candidate':<40}{head}")
    for k in models:
        cells = ""
        for t in args.threads:
            ms = results[t][k] * 1e3
            ratio = results[t][base_of[k]] / results[t][k]
            cells += f"{ms:>11.2f}{ratio:>8.2f}"
        print(f"{k:<40}{cells}")


if __name__ == "__main__":
    main()
