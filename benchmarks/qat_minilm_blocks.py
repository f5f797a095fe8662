"""QAT recipe without labels, block by block: all-MiniLM-L6-v2 with low-bit GELU tables.

The defaults are the documented 6-bit recipe (docs/qat.md, "6-bit MiniLM"): 6-bit codes in and
out, 32 tables of 64 entries per GELU site, block reconstruction of every feed-forward block.
Distillation from the fp32 model on the calibration text only (``--package-sentences N``: and
on N more sentences of the same half from the installed packages' docstrings), done per
feed-forward block (block reconstruction, as in AdaRound / BRECQ) instead of through the whole
network:

1. tables: ``--groups K`` > 0 (default) partitions each site's 1536 channels into K groups by
   their calibrated ranges (``partition_channels``, as ``convert --groups K``), each group a
   ``--bits``-bit table over its min/max with GELU's negative tail cut at ``--bits``
   (``GroupedGeluFakeQuant``); ``--groups 0``: one table per site, ``--method`` ranges (default
   ``mse``, scored at ``--bits``) with the tail cut. The int8 default row is ``entropy`` with
   the tail cut, i.e. ``convert --target int8-lut``'s tables;
2. for each layer ``l`` in order: run the *student* (layers ``< l`` already quantized and
   trained) over the first ``--train-sentences`` calibration sentences and keep the input ``a``
   of layer ``l``'s feed-forward block on every real token (no padding); the target is the
   teacher's own block output on the teacher's input (``--target teacher``, default: also
   undoes upstream error) or the fp32 block on the student's input (``--target local``);
   optionally (``--zp-search N``) pick each table's input zero point on N tokens, and
   (``--refit``) refit ``W2``, ``b2`` in closed form to the tables' error on the block's
   tokens first (convert's consumer correction, :func:`gelu_quant.graph.consumer_fit.
   fit_consumer`, ridge chosen on held-out tokens); train the
   block's GELU scales (LSQ, Adam with a learning rate relative to each scale) and ``--train``
   more of the block (default ``all``: both FFN biases, the output LayerNorm, ``W2``, ``W1``)
   on the MSE of the block output ``LN(W2 GELU(W1 a + b1) + b2 + a)``, ``--block-steps``
   minibatches of ``--tokens`` tokens, cosine schedule;
3. optionally ``--e2e-steps`` of whole-model distillation (``1 - cos`` of the sentence
   embeddings) afterwards (measured harmful; off by default).

Reported, per row: ``1 - mean cos`` and the worst cos against fp32 on the first 256 evaluation
sentences (the disjoint half of the corpus, never trained or calibrated on), and the selection
score: ``1 - mean cos`` on the ``--select`` calibration sentences after the training ones (never
trained on either) -- choose hyper-parameters on that, not on the evaluation text.

Runtime of the defaults on 2 shared cores: 277 s on the quiet machine (16 groups: 164 s; about
10 min at load 5; setup and every report row included).

    python benchmarks/qat_minilm_blocks.py                 # 6-bit: 1.496e-3 (int8 tables 1.466e-3)
    python benchmarks/qat_minilm_blocks.py --bits 4 --train w2   # 4 bits: 1.440e-2
    python benchmarks/qat_minilm_blocks.py --out-bits 8 --train norms   # 64 int8 entries: 7.139e-4

``--out-bits 8``: 64-entry tables of int8 entries (``convert --target int6-lut-int8out``);
``--export DIR``: the trained student exported, converted and scored in ONNX Runtime too.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from gelu_quant.lut.grouped import GroupedLutSpec, partition_channels
from gelu_quant.lut.table import build_lut
from gelu_quant.lut.tails import cut_range, negative_tail_cut
from gelu_quant.models.corpus import package_sentences, stdlib_sentences
from gelu_quant.models.minilm import INPUT_NAMES, load_torch_model, tokenize
from gelu_quant.torch import (
    GeluFakeQuant,
    GroupedGeluFakeQuant,
    calibrate_ranges,
    collect_stats,
    export_qat_onnx,
    prepare_qat,
)

Batch = tuple[torch.Tensor, ...]
RANGE_METHODS = ("minmax", "percentile", "entropy", "mse")


def batches(texts: list[str], size: int, max_length: int, trim: bool = True) -> list[Batch]:
    """Tokenized batches; ``trim`` drops the all-padding columns (masked out anyway)."""
    out = []
    for i in range(0, len(texts), size):
        f = tokenize(texts[i : i + size], max_length=max_length)
        t = [torch.from_numpy(f[k]) for k in INPUT_NAMES]
        if trim:
            n = int(t[1].sum(1).max())
            t = [x[:, :n] for x in t]
        out.append(tuple(t))
    return out


def embed(model: nn.Module, data: list[Batch]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(*b)[1] for b in data])


def one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(1.0 - nn.functional.cosine_similarity(a.double(), b.double()).mean())


def layers(model: nn.Module) -> Any:
    return model.encoder.encoder.layer  # type: ignore[union-attr]


def capture(
    model: nn.Module, data: list[Batch], idxs: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Layers ``idxs``' feed-forward input and output on every real token, ``[N, 384]`` each,
    from one pass over ``data``."""
    got: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {i: ([], []) for i in idxs}
    mask: list[torch.Tensor] = []
    hooks = []
    for i in idxs:
        layer = layers(model)[i]
        gi, go = got[i]
        hooks.append(
            layer.intermediate.register_forward_hook(
                lambda _m, a, _o, gi=gi: gi.append(a[0][mask[-1]])
            )
        )
        hooks.append(
            layer.output.register_forward_hook(lambda _m, _a, o, go=go: go.append(o[mask[-1]]))
        )
    try:
        with torch.no_grad():
            for b in data:
                mask.append(b[1].bool())
                model(*b)
    finally:
        for h in hooks:
            h.remove()
    return [(torch.cat(got[i][0]), torch.cat(got[i][1])) for i in idxs]


def _tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def layer_inputs(model: nn.Module, data: list[Batch]) -> tuple[list[torch.Tensor], list[Any]]:
    """The hidden states and keyword arguments (the prepared attention mask) layer 0 receives,
    per batch: later layers are then run one at a time on the previous one's outputs."""
    hs: list[torch.Tensor] = []
    kws: list[dict[str, Any]] = []

    def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hs.append(args[0] if args else kwargs["hidden_states"])
        kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if len(args) > 1:
            kw["attention_mask"] = args[1]
        kws.append(kw)

    h = layers(model)[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            for b in data:
                model(*b)
    finally:
        h.remove()
    return hs, kws


def channel_ranges(model: nn.Module, data: list[Batch]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every GELU's per-channel min and max over ``data`` (what ``convert --groups`` reads)."""
    lo: dict[int, torch.Tensor] = {}
    hi: dict[int, torch.Tensor] = {}

    def hook(i: int) -> Any:
        def f(_m: nn.Module, a: tuple[torch.Tensor, ...], _o: Any) -> None:
            x = a[0].reshape(-1, a[0].shape[-1])
            lo[i] = torch.minimum(lo[i], x.amin(0)) if i in lo else x.amin(0)
            hi[i] = torch.maximum(hi[i], x.amax(0)) if i in hi else x.amax(0)

        return f

    hs = [
        layer.intermediate.intermediate_act_fn.register_forward_hook(hook(i))
        for i, layer in enumerate(layers(model))
    ]
    try:
        with torch.no_grad():
            for b in data:
                model(*b)
    finally:
        for h in hs:
            h.remove()
    return [(lo[i].numpy().astype(np.float64), hi[i].numpy().astype(np.float64)) for i in lo]


def grouped_student(
    teacher: nn.Module,
    ch: list[tuple[np.ndarray, np.ndarray]],
    k: int,
    bits: int,
    out_bits: int | None = None,
    clip: float = 1.0,
) -> nn.Module:
    """The teacher with every GELU a K-group table of ``bits``-bit input codes (``out_bits``-bit
    output codes, default ``bits``): channels partitioned by ``partition_channels`` on their
    tail-cut ranges, each group its min/max with the tail cut (as ``convert --groups`` builds
    them, at these widths); ``clip`` < 1 starts every group's top at that fraction of its max."""
    student = copy.deepcopy(teacher)
    for layer, (lo, hi) in zip(layers(student), ch, strict=True):
        kw: dict[str, Any] = {"in_bits": bits, "out_bits": out_bits or bits}
        hi = np.maximum(hi, 1e-3)
        cut = np.array([negative_tail_cut(float(h), **kw) for h in hi])
        part = partition_channels(np.maximum(lo, cut), hi, k)
        specs = []
        for g in range(int(part.max()) + 1):
            m = part == g
            rng = cut_range(min(float(lo[m].min()), -1e-3), clip * float(hi[m].max()), **kw)
            specs.append(build_lut(in_range=rng, **kw))
        spec = GroupedLutSpec(groups=tuple(specs), channel_group=part)
        layer.intermediate.intermediate_act_fn = GroupedGeluFakeQuant.from_spec(
            spec, learn_ranges=True
        )
    return student


def ffn(layer: Any, a: torch.Tensor) -> torch.Tensor:
    return layer.output(layer.intermediate(a), a)


def block_mse(layer: Any, a: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> float:
    """The block-output MSE over every token, ``chunk`` tokens at a time (one pass over all of
    them at once holds several ``[N, 1536]`` intermediates: 20 GB at 16k training sentences)."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, a.shape[0], chunk):
            d = ffn(layer, a[i : i + chunk]) - y[i : i + chunk]
            total += float(d.double().square().sum())
    return total / y.numel()


def block_params(layer: Any, what: str) -> list[dict[str, Any]]:
    fq = layer.intermediate.intermediate_act_fn
    assert isinstance(fq, (GeluFakeQuant, GroupedGeluFakeQuant))
    groups: list[dict[str, Any]] = [
        {"params": [fq.in_scale], "rel": True},
        {"params": [fq.out_scale], "rel": True},
    ]
    if what == "ranges":
        return groups
    extra = list(layer.output.LayerNorm.parameters())
    extra += [layer.intermediate.dense.bias, layer.output.dense.bias]
    if what in ("w2", "all"):
        extra.append(layer.output.dense.weight)
    if what == "all":
        extra.append(layer.intermediate.dense.weight)
    groups.append({"params": extra, "rel": False})
    return groups


def _in_zero_points(fq: nn.Module) -> list[int]:
    if isinstance(fq, GroupedGeluFakeQuant):
        return [int(z) for z in fq.in_zero_point]
    assert isinstance(fq, GeluFakeQuant)
    return [fq.in_zero_point]


def _set_in_zero_point(fq: nn.Module, k: int, z: int) -> None:
    """Group ``k``'s (or the table's) input zero point ``z``, the scale changed so that the top
    of the input range, ``(qmax - z) · s``, stays where it is: only the bottom end moves."""
    with torch.no_grad():
        if isinstance(fq, GroupedGeluFakeQuant):
            qmax, z0 = int(fq.in_qmax[k]), int(fq.in_zero_point[k])
            fq.in_scale[k] = fq.in_scale[k] * (qmax - z0) / (qmax - z)
            fq.in_zero_point[k] = z
        else:
            assert isinstance(fq, GeluFakeQuant)
            qmax, z0 = fq.in_qmax, fq.in_zero_point
            fq.in_scale.mul_((qmax - z0) / (qmax - z))
            fq.in_zero_point = z
    fq._key = None  # the table is rebuilt from the new qparams on the next forward


def search_zero_points(layer: Any, a: torch.Tensor, y: torch.Tensor, tokens: int) -> str:
    """Choose each table's input zero point (with the scale keeping the range's top fixed) that
    minimises the block-output MSE on ``tokens`` of the calibration tokens, group by group
    (one coordinate-descent sweep): where the bottom of each 6-bit input range lies decides how
    the 64 codes split between GELU's flat negative tail and its positive part."""
    fq = layer.intermediate.intermediate_act_fn
    idx = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(1))[:tokens]
    a, y = a[idx], y[idx]
    out = []
    with torch.no_grad():
        h = layer.intermediate.dense(a)

        def err() -> float:
            return float(nn.functional.mse_loss(layer.output(fq(h), a), y))

        best = err()
        for k, z0 in enumerate(_in_zero_points(fq)):
            if isinstance(fq, GroupedGeluFakeQuant):
                qmin, qmax = int(fq.in_qmin[k]), int(fq.in_qmax[k])
                s0 = float(fq.in_scale[k])
            else:
                qmin, qmax, s0 = fq.in_qmin, fq.in_qmax, float(fq.in_scale)
            top = (qmax - z0) * s0
            zk = z0
            for z in range(qmin + 1, qmax):
                lo = -(z - qmin) * top / (qmax - z)
                if z == zk or not -4.0 <= lo <= -0.2:
                    continue
                _set_in_zero_point(fq, k, z)
                e = err()
                if e < best:
                    best, zk = e, z
                _set_in_zero_point(fq, k, zk)
            out.append(f"{z0}->{zk}")
    return " ".join(out)


def refit_consumer(layer: Any, a: torch.Tensor) -> str:
    """Refit the block's ``W2``, ``b2`` to its tables' error on the block's tokens ``a``: the
    consumer correction ``convert`` applies after a table (closed-form ridge, the ridge chosen
    on held-out rows), here on every token of the block instead of a row sample."""
    from gelu_quant.graph.consumer_fit import fit_consumer

    fq = layer.intermediate.intermediate_act_fn
    dense = layer.output.dense
    with torch.no_grad():
        x = layer.intermediate.dense(a)
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(2))
        x = x[perm]  # random order: fit_consumer holds out every fourth row
        fit = fit_consumer(
            fq(x).double().numpy(),
            nn.functional.gelu(x.double()).numpy(),
            dense.weight.detach().double().numpy().T,
            intercept=True,
        )
        if fit.applied:
            assert fit.delta_w is not None and fit.delta_b is not None
            dense.weight += torch.from_numpy(fit.delta_w.T).to(dense.weight.dtype)
            dense.bias += torch.from_numpy(fit.delta_b).to(dense.bias.dtype)
    return f"refit ridge {fit.ridge}, held-out error {min(fit.heldout_error.values()):.3f}"


def reconstruct(
    student: nn.Module,
    teacher: nn.Module,
    cal: list[Batch],
    args: argparse.Namespace,
) -> None:
    t_out: list[torch.Tensor] = []
    if args.target == "teacher":
        t_out = [y for _, y in capture(teacher, cal, list(range(len(layers(teacher)))))]
    gen = torch.Generator().manual_seed(0)
    hidden, kwargs = layer_inputs(student, cal)  # the student's input of layer 0, per batch
    masks = [b[1].bool() for b in cal]
    for i, layer in enumerate(layers(student)):
        t0 = time.perf_counter()
        got: list[torch.Tensor] = []
        hook = layer.intermediate.register_forward_hook(
            lambda _m, a, _o, got=got: got.append(a[0][masks[len(got)]])
        )
        try:
            with torch.no_grad():
                for h, kw in zip(hidden, kwargs, strict=True):
                    layer(h, **kw)
        finally:
            hook.remove()
        a = torch.cat(got)
        with torch.no_grad():
            y = t_out[i] if args.target == "teacher" else ffn(layers(teacher)[i], a)
        if args.zp_search:
            zps = search_zero_points(layer, a, y, args.zp_search)
            print(f"  block {i}: input zero points {zps}", flush=True)
        if args.refit:
            print(f"  block {i}: {refit_consumer(layer, a)}", flush=True)
        groups = block_params(layer, args.train)
        for p in layer.parameters():
            p.requires_grad_(False)
        opt_groups = []
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
            if g["rel"]:
                p0 = float(g["params"][0].detach().mean())
                opt_groups.append({"params": g["params"], "lr": args.lr_scales * p0})
            else:
                opt_groups.append({"params": g["params"], "lr": args.lr})
        opt = torch.optim.Adam(opt_groups)
        base = [g["lr"] for g in opt.param_groups]
        before = block_mse(layer, a, y)
        ts = time.perf_counter()
        for step in range(args.block_steps):
            if step == 20:
                dt = (time.perf_counter() - ts) / 20
                print(f"  block {i}: {dt:.2f} s/step", flush=True)
            c = 0.5 * (1 + math.cos(math.pi * step / args.block_steps))
            for g, b0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = b0 * c
            idx = torch.randint(0, a.shape[0], (args.tokens,), generator=gen)
            loss = nn.functional.mse_loss(ffn(layer, a[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p in layer.parameters():
            p.requires_grad_(False)
        after = block_mse(layer, a, y)
        with torch.no_grad():
            hidden = [_tensor(layer(h, **kw)) for h, kw in zip(hidden, kwargs, strict=True)]
        fq = layer.intermediate.intermediate_act_fn
        print(
            f"  block {i}: {a.shape[0]} tokens, mse {before:.3e} -> {after:.3e} "
            f"({time.perf_counter() - t0:.0f} s)  {fq.extra_repr()}",
            flush=True,
        )


def e2e(student: nn.Module, teacher: nn.Module, cal: list[Batch], args: argparse.Namespace) -> None:
    for p in student.parameters():
        p.requires_grad_(False)
    params: list[dict[str, Any]] = []
    for layer in layers(student):
        for g in block_params(layer, args.train):
            for p in g["params"]:
                p.requires_grad_(True)
            lr = args.lr_scales * float(g["params"][0].detach().mean()) if g["rel"] else args.lr
            params.append({"params": g["params"], "lr": 0.3 * lr})
    opt = torch.optim.Adam(params)
    with torch.no_grad():
        targets = [teacher(*b)[1] for b in cal]
    rng = np.random.default_rng(0)
    for step in range(args.e2e_steps):
        k = int(rng.integers(len(cal)))
        emb = student(*cal[k])[1]
        loss = (1.0 - nn.functional.cosine_similarity(emb, targets[k])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            print(f"  e2e step {step:4d} loss {float(loss.detach()):.3e}", flush=True)


def export_and_check(
    student: nn.Module, ev: list[Batch], ref: torch.Tensor, folder: str
) -> tuple[float, float, float, int, int]:
    """Export the trained student (QDQ around every GELU), ``convert`` it (the QDQ path collapses
    each site into its trained tables) and run it in ONNX Runtime on the evaluation batches:
    1 - mean cos against fp32 and against the PyTorch student, the largest embedding difference
    from the student, and the converted / total GELU sites."""
    from pathlib import Path

    import onnxruntime as ort

    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.models.minilm import OUTPUT_NAMES

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    src, dst = out / "qat.onnx", out / "qat.gq.onnx"
    axes = {0: "batch", 1: "sequence"}
    dynamic: dict[str, dict[int, str]] = {name: axes for name in INPUT_NAMES}
    dynamic["last_hidden_state"] = axes
    dynamic["sentence_embedding"] = {0: "batch"}
    export_qat_onnx(
        student,
        ev[0],
        src,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=dynamic,
    )
    result = convert_file(src, dst, ConvertConfig(target="int8-lut"))
    sites = result.manifest.sites
    done = sum(r.status == "converted" and r.mode == "qdq" for r in sites)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
    embs = []
    for b in ev:
        feed = {k: t.numpy() for k, t in zip(INPUT_NAMES, b, strict=True)}
        embs.append(torch.from_numpy(sess.run(["sentence_embedding"], feed)[0]))
    got = torch.cat(embs)
    mine = embed(student, ev)
    diff = float((got - mine).abs().max())
    return one_minus_cos(got, ref), one_minus_cos(got, mine), diff, done, len(sites)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bits", type=int, default=6, help="input (and output) code width")
    ap.add_argument(
        "--out-bits",
        type=int,
        default=None,
        help="output code width, when it differs from --bits (8: a 2^bits-entry table of int8 "
        "entries, convert --target int{bits}-lut-int8out)",
    )
    ap.add_argument(
        "--method",
        choices=RANGE_METHODS,
        default="mse",
        help="range method of the one-table-per-site student and its post-training row",
    )
    ap.add_argument(
        "--train",
        choices=("ranges", "norms", "w2", "all"),
        default="all",
        help="what each block trains besides the GELU scales: nothing (ranges), FFN biases and "
        "output LayerNorm (norms), + W2 (w2), + W1 (all)",
    )
    ap.add_argument(
        "--target",
        choices=("local", "teacher"),
        default="teacher",
        help="block target: the teacher's block output (teacher) or the fp32 block on the "
        "student's input (local)",
    )
    ap.add_argument("--block-steps", type=int, default=150, help="training steps per block")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per block step")
    ap.add_argument("--lr", type=float, default=1e-4, help="weights, biases, LayerNorms (Adam)")
    ap.add_argument("--lr-scales", type=float, default=1e-2, help="relative to each scale")
    ap.add_argument(
        "--e2e-steps", type=int, default=0, help="whole-model 1 - cos steps after the blocks"
    )
    ap.add_argument("--batch", type=int, default=16, help="sentences per e2e step")
    ap.add_argument(
        "--calibration", type=int, default=512, help="sentences the ranges are calibrated on"
    )
    ap.add_argument(
        "--train-sentences",
        type=int,
        default=512,
        help="calibration sentences the blocks are trained on (the first N of the same half)",
    )
    ap.add_argument(
        "--package-sentences",
        type=int,
        default=0,
        metavar="N",
        help="train on N more sentences too: the first N of the calibration half of the "
        "installed packages' docstrings (package_sentences; the evaluation sentences are in the "
        "other half by the same hash, so never among them)",
    )
    ap.add_argument(
        "--groups",
        type=int,
        default=32,
        help="K-group tables per GELU site, each 2^bits entries (0: one table per site)",
    )
    ap.add_argument(
        "--refit",
        action="store_true",
        help="before training each block, refit W2, b2 to its tables' error in closed form "
        "(convert's consumer correction, on every token of the block)",
    )
    ap.add_argument(
        "--zp-search",
        type=int,
        default=0,
        help="before training each block, search every table's input zero point on this many "
        "calibration tokens (0: keep the calibrated zero points)",
    )
    ap.add_argument(
        "--select",
        type=int,
        default=256,
        help="calibration sentences after the training ones, never trained on: the selection "
        "score (choose hyper-parameters on this, not on the evaluation text)",
    )
    ap.add_argument(
        "--ranges",
        metavar="FILE",
        default=None,
        help="grouped tables: start from the tables convert --groups K --group-method M builds "
        "from this ranges file (gelu-quant calibrate of the opset-17 export on the first "
        "--calibration calibration sentences) instead of min/max groups from PyTorch",
    )
    ap.add_argument(
        "--group-method",
        choices=RANGE_METHODS,
        default="mse",
        help="with --ranges: each group's range method",
    )
    ap.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="grouped tables: start every group's input range top at this fraction of its "
        "calibrated maximum (1: min/max)",
    )
    ap.add_argument(
        "--export",
        metavar="DIR",
        default=None,
        help="export the trained student to DIR/qat.onnx, convert it to DIR/qat.gq.onnx and "
        "score that in ONNX Runtime too",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    teacher = load_torch_model()
    n_train = max(args.train_sentences, args.calibration)
    all_cal = stdlib_sentences("calibration", n_train + args.select)
    cal_texts = all_cal[: args.calibration]
    train_texts = all_cal[:n_train]
    if args.package_sentences:
        train_texts += package_sentences("calibration", args.package_sentences)
    ev = batches(stdlib_sentences("evaluation", 256), 32, 128)
    sel = batches(all_cal[n_train:], 32, 128)
    ref, sel_ref = embed(teacher, ev), embed(teacher, sel)
    rows: list[tuple[str, float, float, float]] = []
    out_bits = args.out_bits or args.bits
    width = f"{args.bits}-bit" if out_bits == args.bits else f"{args.bits}-in/{out_bits}-out"

    def report(name: str, model: nn.Module) -> tuple[str, float, float, float]:
        """Evaluation 1 - mean cos, evaluation worst cos, selection 1 - mean cos."""
        e = embed(model, ev)
        cos = nn.functional.cosine_similarity(e.double(), ref.double())
        sc = one_minus_cos(embed(model, sel), sel_ref) if args.select else float("nan")
        row = (name, float(1.0 - cos.mean()), float(cos.min()), sc)
        rows.append(row)
        print(f"  {name:40s} {row[1]:.3e}  worst cos {row[2]:.5f}  selection {sc:.3e}", flush=True)
        return row

    # statistics on 128-token padded batches, as `gelu-quant calibrate` sees the exported model
    stats = collect_stats(teacher, batches(cal_texts, 32, 128, trim=False))
    for name, method, bits, ob in (
        ("post-training int8 entropy (the default)", "entropy", 8, 8),
        (f"post-training {width} {args.method}", args.method, args.bits, out_bits),
    ):
        r = calibrate_ranges(teacher, [], method, stats=stats, bits=bits, out_bits=ob)  # type: ignore[arg-type]
        s = prepare_qat(
            copy.deepcopy(teacher), r, bits=bits, out_bits=ob, learn_ranges=False, tail_cut=True
        )
        report(name, s)
    ranges = calibrate_ranges(
        teacher,
        [],
        args.method,  # type: ignore[arg-type]
        stats=stats,
        bits=args.bits,
        out_bits=out_bits,
    )
    if args.groups and args.ranges:  # convert --groups K --group-method M's own tables
        student = prepare_qat(
            copy.deepcopy(teacher),
            args.ranges,
            bits=args.bits,
            out_bits=out_bits,
            groups=args.groups,
            group_method=args.group_method,
        )
        report(f"post-training {width}, {args.groups} {args.group_method} groups", student)
    elif args.groups:
        ch = channel_ranges(teacher, batches(cal_texts, 32, 128, trim=False))
        student = grouped_student(teacher, ch, args.groups, args.bits, out_bits, args.clip)
        clipped = "" if args.clip == 1.0 else f", tops x{args.clip:g}"
        report(f"post-training {width}, {args.groups} groups{clipped}", student)
    else:
        student = prepare_qat(
            copy.deepcopy(teacher),
            ranges,
            bits=args.bits,
            out_bits=out_bits,
            learn_ranges=True,
            tail_cut=True,
        )
    print(f"  setup {time.perf_counter() - t0:.0f} s", flush=True)
    student.eval()  # no dropout: the student must see the deployed function
    t1 = time.perf_counter()
    cal = batches(train_texts, 32, 128)
    if args.block_steps:
        reconstruct(student, teacher, cal, args)
    t_blocks = time.perf_counter() - t1
    final = report("after block reconstruction", student)
    t_e2e = 0.0
    if args.e2e_steps:
        t2 = time.perf_counter()
        e2e(student, teacher, batches(train_texts, args.batch, 128), args)
        t_e2e = time.perf_counter() - t2
        final = report(f"after {args.e2e_steps} e2e distillation steps", student)
    print(
        f"all-MiniLM-L6-v2, GELU tables {args.bits}-bit in, {out_bits}-bit out, 1 - cos on 256 "
        f"held-out sentences; start {args.method}, train={args.train}, target={args.target}, "
        f"groups={args.groups}, refit={args.refit}, {len(train_texts)} training sentences "
        f"({args.package_sentences} from installed packages), "
        f"{args.block_steps} steps x {args.tokens} tokens per block ({t_blocks:.0f} s), "
        f"{args.e2e_steps} e2e steps ({t_e2e:.0f} s), lr={args.lr}, lr-scales={args.lr_scales}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    print(f"  {'':40s} 1 - cos    worst cos  selection 1 - cos ({args.select} calibration)")
    for name, m, w, sc in rows:
        print(f"  {name:40s} {m:.3e}  {w:.5f}    {sc:.3e}")
    if args.export:
        m, vs, diff, done, n = export_and_check(student, ev, ref, args.export)
        print(
            f"  exported -> convert ({done} of {n} GELU sites from their QDQ) -> ONNX Runtime: "
            f"1 - cos {m:.3e}; against the PyTorch student 1 - cos {vs:.2e}, "
            f"max |embedding difference| {diff:.2e}"
        )
    d = rows[0][1]
    print(f"  QAT {width} / int8 tables-only default: {final[1] / d:.2f}")


if __name__ == "__main__":
    main()
