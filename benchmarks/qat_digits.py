"""QAT recipe with labels: the digits ViT with 4-bit GELU tables (input and output codes).

Trains the fp32 ViT as the fixture does (fixed seed, one thread), calibrates its two GELUs in
PyTorch (minmax on the training split), swaps them for 4-bit fake-quant tables and reports the
test accuracy after post-training quantization and after quantization-aware training (task loss,
cross-entropy on the training split; the GELU scales and the LayerNorms train first, then every
weight at a small learning rate). Finally exports the QAT model, converts it with
``gelu-quant convert`` (QDQ path) and checks that ONNX Runtime gives the PyTorch model's
predictions.

    python benchmarks/qat_digits.py [--bits 4] [--epochs 6]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.digits_vit import (
    INPUT_NAME,
    OUTPUT_NAME,
    digits_test_data,
    digits_train_data,
    ort_accuracy,
    train,
)
from gelu_quant.torch import calibrate_ranges, export_qat_onnx, fake_quant_modules, prepare_qat


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def qat(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr_ranges: float = 1e-2,
    lr_weights: float = 2e-4,
    full_from: int = 2,
    seed: int = 0,
) -> torch.nn.Module:
    """Task-loss QAT: scales and LayerNorms from the first epoch, all weights from ``full_from``."""
    scales = [p for m in fake_quant_modules(model) for p in (m.in_scale, m.out_scale)]
    ids = {id(p) for p in scales}
    norms = [
        p for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    ]
    ids |= {id(p) for p in norms}
    rest = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.Adam(
        [
            {"params": scales, "lr": lr_ranges},
            {"params": norms, "lr": lr_weights},
            {"params": rest, "lr": 0.0},
        ]
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        if epoch == full_from:
            opt.param_groups[2]["lr"] = lr_weights
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    x_train, y_train = digits_train_data()
    feeds, y_test = digits_test_data()
    x_test = feeds[INPUT_NAME]
    fp32 = train(x_train, y_train)
    acc_fp32 = accuracy(fp32, x_test, y_test)
    t_train = time.perf_counter() - t0
    batches = [(torch.from_numpy(x_train[i : i + 256]),) for i in range(0, len(x_train), 256)]
    ranges = calibrate_ranges(fp32, batches, "minmax")
    model = prepare_qat(copy.deepcopy(fp32), ranges, bits=args.bits, learn_ranges=True)
    acc_ptq = accuracy(model, x_test, y_test)
    t1 = time.perf_counter()
    model = qat(model, x_train, y_train, epochs=args.epochs)
    t_qat = time.perf_counter() - t1
    acc_qat = accuracy(model, x_test, y_test)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "qat.onnx", Path(tmp) / "qat.gq.onnx"
        export_qat_onnx(
            model,
            (torch.from_numpy(x_test[:2]),),
            src,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        convert_file(src, dst, ConvertConfig(target="int8-lut"))
        acc_ort = ort_accuracy(dst, x_test, y_test)
    drop_ptq, drop_qat = 100 * (acc_fp32 - acc_ptq), 100 * (acc_fp32 - acc_qat)
    print(f"digits ViT, {args.bits}-bit GELU tables in and out ({len(y_test)} test images)")
    print(f"  fp32 accuracy                 {acc_fp32:.4f}   (trained in {t_train:.0f} s)")
    print(f"  post-training {args.bits}-bit tables    {acc_ptq:.4f}   drop {drop_ptq:+.2f} points")
    print(
        f"  after QAT ({args.epochs} epochs)        {acc_qat:.4f}   drop {drop_qat:+.2f} points"
        f"   (QAT {t_qat:.0f} s)"
    )
    print(f"  QAT model exported, converted, ONNX Runtime: {acc_ort:.4f}")
    for m in fake_quant_modules(model):
        print(f"  {m.site_id}: {m.extra_repr()}")


if __name__ == "__main__":
    main()
