"""QAT recipe without labels: all-MiniLM-L6-v2 with low-bit GELU tables, distilled from fp32.

Teacher: the fp32 model's sentence embeddings on the calibration text
(``stdlib_sentences("calibration", N)``); student: the same model with its six GELUs swapped for
fake-quant tables (``prepare_qat``, minmax ranges calibrated in PyTorch on that text). Loss:
``1 - cos`` of the sentence embeddings (plus ``--hidden-weight`` times the MSE of the last hidden
states). Trained: the GELU scales (LSQ) and, with ``--train norms``, the LayerNorms; with
``--train ffn`` also the feed-forward biases. Reported: ``1 - mean cos`` against fp32 on the
first 256 evaluation sentences (never trained on), after post-training calibration and after QAT.

    python benchmarks/qat_minilm.py --bits 4 --steps 120
    python benchmarks/qat_minilm.py --bits 6 --steps 60
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from gelu_quant.models.corpus import stdlib_sentences
from gelu_quant.models.minilm import INPUT_NAMES, load_torch_model, tokenize
from gelu_quant.torch import calibrate_ranges, collect_stats, fake_quant_modules, prepare_qat


def batches(texts: list[str], size: int, max_length: int) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for i in range(0, len(texts), size):
        f = tokenize(texts[i : i + size], max_length=max_length)
        out.append(tuple(torch.from_numpy(f[k]) for k in INPUT_NAMES))
    return out


def embed(model: torch.nn.Module, data: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(*b)[1] for b in data])


def one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(1.0 - torch.nn.functional.cosine_similarity(a.double(), b.double()).mean())


def trainable(model: torch.nn.Module, what: str) -> list[dict[str, object]]:
    """Parameter groups: GELU scales, LayerNorms, feed-forward biases."""
    for p in model.parameters():
        p.requires_grad_(False)
    scales = [p for m in fake_quant_modules(model) for p in (m.in_scale, m.out_scale)]
    groups: list[dict[str, object]] = [{"params": scales, "scales": True}]
    if what in ("norms", "ffn"):
        norms = [
            p for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
        ]
        groups.append({"params": norms})
    if what == "ffn":
        biases = [
            p
            for n, p in model.named_parameters()
            if n.endswith("bias") and (".intermediate." in n or ".output.dense" in n)
        ]
        groups.append({"params": biases})
    for g in groups:
        for p in g["params"]:  # type: ignore[attr-defined]
            p.requires_grad_(True)
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4, help="LayerNorms and biases (Adam)")
    ap.add_argument(
        "--lr-scales",
        type=float,
        default=2e-2,
        help="GELU scales (Adam: an absolute step, so of the order of 1%% of the scales)",
    )
    ap.add_argument("--train", choices=("ranges", "norms", "ffn"), default="norms")
    ap.add_argument("--hidden-weight", type=float, default=0.0)
    ap.add_argument("--calibration", type=int, default=512)
    ap.add_argument(
        "--method",
        choices=("minmax", "percentile", "entropy", "mse"),
        default="mse",
        help="range method the QAT starts from (mse scored at --bits)",
    )
    ap.add_argument("--max-length", type=int, default=64, help="training tokens per sentence")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    teacher = load_torch_model()
    cal_texts = stdlib_sentences("calibration", args.calibration)
    ev = batches(stdlib_sentences("evaluation", 256), 32, 128)
    cal = batches(cal_texts, args.batch, args.max_length)
    ref = embed(teacher, ev)
    stats = collect_stats(teacher, batches(cal_texts, 32, 128))
    ptq: dict[str, float] = {}
    starts: dict[str, dict[str, tuple[float, float]]] = {}
    for name, method, bits in (
        ("int8 minmax (the default)", "minmax", 8),
        (f"{args.bits}-bit minmax", "minmax", args.bits),
        (f"{args.bits}-bit {args.method}", args.method, args.bits),
    ):
        if name in ptq:
            continue
        r = calibrate_ranges(teacher, [], method, stats=stats, bits=bits)  # type: ignore[arg-type]
        starts[name] = r
        s = prepare_qat(copy.deepcopy(teacher), r, bits=bits, learn_ranges=False)
        ptq[name] = one_minus_cos(embed(s, ev), ref)
        print(f"  post-training {name:28s} {ptq[name]:.3e}", flush=True)
    ranges = starts[f"{args.bits}-bit {args.method}"]
    with torch.no_grad():
        targets = [teacher(*b) for b in cal]
    t_setup = time.perf_counter() - t0
    student = prepare_qat(copy.deepcopy(teacher), ranges, bits=args.bits, learn_ranges=True)
    groups = trainable(student, args.train)
    opt = torch.optim.Adam(
        [
            {"params": g["params"], "lr": args.lr_scales if g.get("scales") else args.lr}
            for g in groups
        ]  # type: ignore[arg-type]
    )
    student.train()
    for m in student.modules():  # no dropout: the student must see the deployed function
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        k = int(rng.integers(len(cal)))
        hidden, emb = student(*cal[k])
        t_hidden, t_emb = targets[k]
        loss = (1.0 - torch.nn.functional.cosine_similarity(emb, t_emb)).mean()
        if args.hidden_weight:
            loss = loss + args.hidden_weight * torch.nn.functional.mse_loss(hidden, t_hidden)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(f"  step {step:4d} loss {float(loss.detach()):.3e}", flush=True)
    t_qat = time.perf_counter() - t1
    student.eval()
    after = one_minus_cos(embed(student, ev), ref)
    print(
        f"all-MiniLM-L6-v2, GELU tables {args.bits}-bit in and out, 1 - cos on 256 held-out "
        f"sentences (setup {t_setup:.0f} s, QAT {args.steps} steps x {args.batch} in "
        f"{t_qat:.0f} s, train={args.train}, lr={args.lr})"
    )
    for name, v in ptq.items():
        print(f"  post-training {name:28s} {v:.3e}")
    base = ptq[f"{args.bits}-bit minmax"]
    best = min(ptq[f"{args.bits}-bit minmax"], ptq[f"{args.bits}-bit {args.method}"])
    print(
        f"  after distillation QAT, {args.bits}-bit          {after:.3e}   "
        f"({base / after:.1f}x lower than {args.bits}-bit minmax, {best / after:.1f}x lower than "
        f"the best {args.bits}-bit post-training)"
    )
    for m in fake_quant_modules(student):
        print(f"  {m.site_id}: {m.extra_repr()}")


if __name__ == "__main__":
    main()
