"""A small vision transformer on scikit-learn's 8×8 digits, with tanh GELU, shipped as a fixture.

The model: the 8×8 image cut into 16 patches of 2×2 pixels, each embedded to 64 dimensions, a
learned class token and position embeddings, 2 pre-norm transformer blocks (4 heads, feed-forward
64 → 128 → 64 with ``nn.GELU(approximate="tanh")``), a final LayerNorm and a linear head on the
class token. Input ``pixels``: float32 ``[batch, 8, 8]``, the digits' values divided by 16 (so in
0..1); output ``logits``: float32 ``[batch, 10]``.

``python -m gelu_quant.models.digits_vit --out models/fixtures`` trains it with a fixed seed on a
stratified 70 % of the 1797 images (one thread, well under a minute), exports it with the
TorchScript exporter at opset 17 — where each tanh GELU is written out as 9 nodes with
Constant-node scalars: ``Mul(x, x)``, ``Mul(x, x²)``, ``Mul(0.044715, x³)``, ``Add(x, ·)``,
``Mul(√(2/π), ·)``, ``Tanh``, ``Add(1, ·)``, ``Mul(x, ·)``, ``Mul(0.5, ·)`` (no ``Pow``) — and
writes the fixtures:

- ``digits_vit.onnx``: the model (IR version ≤ 10);
- ``digits_test.npz``: the held-out 30 %, arrays ``pixels`` (float32 ``[n, 8, 8]``) and ``labels``
  (int64 ``[n]``);
- ``digits_vit.json``: seed, split, training settings, the fp32 test accuracy measured with ONNX
  Runtime on the exported file, input and output names.

At run time only numpy is needed (:func:`digits_vit_path`, :func:`digits_test_data`,
:func:`digits_vit_info`); training needs torch and scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gelu_quant.errors import DataError, ModelError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL_FILE = "digits_vit.onnx"
DATA_FILE = "digits_test.npz"
INFO_FILE = "digits_vit.json"
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
MAX_IR_VERSION = 10

SETTINGS: dict[str, Any] = {
    "seed": 0,
    "test_size": 0.3,
    "patch": 2,
    "dim": 64,
    "heads": 4,
    "mlp_dim": 128,
    "blocks": 2,
    "gelu": "tanh",
    "epochs": 50,
    "batch_size": 64,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "opset": 17,
}


def digits_vit_path(folder: Path | None = None) -> Path:
    """Path to the committed digits ViT ONNX model (``models/fixtures/digits_vit.onnx``)."""
    path = (folder or FIXTURES) / MODEL_FILE
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: run `python -m gelu_quant.models.digits_vit --out {path.parent}`"
        )
    return path


def digits_test_data(folder: Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The held-out test split: ``({"pixels": float32 [n, 8, 8]}, labels int64 [n])``."""
    path = (folder or FIXTURES) / DATA_FILE
    try:
        with np.load(path) as data:
            pixels = data[INPUT_NAME].astype(np.float32)
            labels = data["labels"].astype(np.int64)
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read the digits test split {path}: {exc}") from exc
    return {INPUT_NAME: pixels}, labels


def digits_train_data() -> tuple[np.ndarray, np.ndarray]:
    """The training split the fixture was trained on, rebuilt from scikit-learn's digits with the
    fixed seed: ``(pixels float32 [n, 8, 8], labels int64 [n])``. Use it to calibrate."""
    x_train, _, y_train, _ = _split()
    return x_train, y_train


def digits_vit_info(folder: Path | None = None) -> dict[str, Any]:
    """The recorded facts of the fixture (seed, settings, fp32 ``accuracy``, ``n_test``, names)."""
    data: dict[str, Any] = json.loads(((folder or FIXTURES) / INFO_FILE).read_text())
    return data


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels,
        labels,
        test_size=SETTINGS["test_size"],
        stratify=labels,
        random_state=SETTINGS["seed"],
    )
    return x_train, x_test, y_train, y_test


def build_model() -> Any:
    """The untrained ViT as a torch module (the seed is set by the caller)."""
    import torch
    from torch import nn

    patch, dim, heads = SETTINGS["patch"], SETTINGS["dim"], SETTINGS["heads"]
    side = 8 // patch
    tokens = side * side

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, SETTINGS["mlp_dim"])
            self.act = nn.GELU(approximate=SETTINGS["gelu"])
            self.fc2 = nn.Linear(SETTINGS["mlp_dim"], dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape
            qkv = self.qkv(self.norm1(x)).reshape(batch, length, 3, heads, dim // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), dim=-1)
            attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
            x = x + self.proj(attended)
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    class DigitsViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(patch * patch, dim)
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
            self.blocks = nn.ModuleList([Block() for _ in range(SETTINGS["blocks"])])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            batch = pixels.shape[0]
            patches = pixels.reshape(batch, side, patch, side, patch).permute(0, 1, 3, 2, 4)
            x = self.embed(patches.reshape(batch, tokens, patch * patch))
            x = torch.cat([self.cls.expand(batch, -1, -1), x], dim=1) + self.pos
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x[:, 0]))

    return DigitsViT()


def train(x_train: np.ndarray, y_train: np.ndarray) -> Any:
    """Train the ViT with the fixed seed on one thread (bit-reproducible on one machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SETTINGS["seed"])
        model = build_model()
        x = torch.from_numpy(x_train)
        y = torch.from_numpy(y_train)
        steps_per_epoch = math.ceil(len(x) / SETTINGS["batch_size"])
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"]
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=SETTINGS["lr"],
            total_steps=SETTINGS["epochs"] * steps_per_epoch,
        )
        generator = torch.Generator().manual_seed(SETTINGS["seed"])
        model.train()
        for _ in range(SETTINGS["epochs"]):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), SETTINGS["batch_size"]):
                idx = order[start : start + SETTINGS["batch_size"]]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


def export(model: Any, path: Path) -> None:
    """Export with the TorchScript exporter at opset 17, dynamic batch, IR version ≤ 10."""
    import warnings

    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, 8, 8),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=SETTINGS["opset"],
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save(proto, str(path))


def ort_accuracy(model_path: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX model on ``pixels`` run with ONNX Runtime (two threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.astype(np.float32)})
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def reproduce(out: Path) -> dict[str, Any]:
    """Train, export and write the three fixture files into ``out``; returns the recorded facts."""
    import torch

    wall, cpu = time.perf_counter(), time.process_time()
    x_train, x_test, y_train, y_test = _split()
    model = train(x_train, y_train)
    seconds = {
        "train_wall_seconds": round(time.perf_counter() - wall, 1),
        "train_cpu_seconds": round(time.process_time() - cpu, 1),
    }
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".digits-vit-") as tmp_text:
        tmp = Path(tmp_text)
        export(model, tmp / MODEL_FILE)
        np.savez(tmp / DATA_FILE, pixels=x_test, labels=y_test)  # "pixels" is INPUT_NAME
        info = {
            "seed": SETTINGS["seed"],
            "settings": SETTINGS,
            "n_train": len(y_train),
            "n_test": len(y_test),
            "accuracy": ort_accuracy(tmp / MODEL_FILE, x_test, y_test),
            "torch_accuracy": torch_acc,
            "input_name": INPUT_NAME,
            "input_shape": ["batch", 8, 8],
            "input_scale": "digits pixel values / 16, in 0..1",
            "output_name": OUTPUT_NAME,
            "output_shape": ["batch", 10],
            "gelu": "tanh",
            "versions": {"torch": torch.__version__},
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for name in (MODEL_FILE, DATA_FILE, INFO_FILE):
            os.replace(tmp / name, out / name)
    return {**info, **seconds}  # times are printed, not written: the files stay deterministic


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gelu_quant.models.digits_vit [--out FOLDER]``: rebuild the fixtures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help="folder for the fixture files")
    args = parser.parse_args(argv)
    info = reproduce(args.out)
    print(
        f"digits ViT: fp32 test accuracy {info['accuracy']:.4f} on {info['n_test']} images "
        f"(trained in {info['train_wall_seconds']} s wall, {info['train_cpu_seconds']} s CPU); "
        f"wrote {MODEL_FILE}, {DATA_FILE}, {INFO_FILE} "
        f"to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
