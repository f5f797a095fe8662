"""The committed digits ViT fixture: files, its tanh GELUs, and the recorded fp32 accuracy.

Oracles: scikit-learn's digits data for the test split; ORT runs of the committed model with the
accuracy and the tanh GELU (float64 numpy) computed here. Retraining is not run here (too slow):
``python -m gelu_quant.models.digits_vit --out DIR`` reproduces the files.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gelu_quant.models.digits_vit import INPUT_NAME, OUTPUT_NAME, digits_vit_info


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def test_files_and_interface(
    digits_vit_model: Path, digits_test_data: tuple[dict[str, np.ndarray], np.ndarray]
) -> None:
    info = digits_vit_info()
    assert digits_vit_model.stat().st_size <= 2 * 1024 * 1024
    model = onnx.load(str(digits_vit_model))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == [info["input_name"]] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [info["output_name"]] == [OUTPUT_NAME]
    feeds, labels = digits_test_data
    pixels = feeds[INPUT_NAME]
    assert pixels.dtype == np.float32 and labels.dtype == np.int64
    assert pixels.shape == (info["n_test"], 8, 8) and labels.shape == (info["n_test"],)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_test_split_is_a_stratified_30_percent_of_sklearn_digits(
    digits_test_data: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    feeds, labels = digits_test_data
    assert len(labels) == math.ceil(0.3 * len(digits.target))
    # every test image is one of the real images (pixels / 16) with its real label
    index = {
        img.astype(np.float32).tobytes(): int(t)
        for img, t in zip(digits.images / 16.0, digits.target, strict=True)
    }
    for img, label in zip(feeds[INPUT_NAME], labels, strict=True):
        assert index[img.tobytes()] == label
    full, test = Counter(digits.target.tolist()), Counter(labels.tolist())
    for digit in range(10):
        assert abs(test[digit] - 0.3 * full[digit]) <= 1


def test_fp32_accuracy_with_ort_equals_the_recorded_value(
    digits_vit_model: Path, digits_test_data: tuple[dict[str, np.ndarray], np.ndarray]
) -> None:
    feeds, labels = digits_test_data
    (logits,) = _session(digits_vit_model).run(None, feeds)
    accuracy = float((np.argmax(logits, axis=1) == labels).mean())
    assert accuracy == digits_vit_info()["accuracy"]
    assert accuracy >= 0.95


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def test_two_tanh_gelus_compute_tanh_gelu(
    digits_vit_model: Path, digits_test_data: tuple[dict[str, np.ndarray], np.ndarray]
) -> None:
    model = onnx.load(str(digits_vit_model))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tanhs = [n for n in graph.node if n.op_type == "Tanh"]
    assert len(tanhs) == 2
    assert not any(n.op_type in ("Erf", "Gelu") for n in graph.node)
    pairs = []
    for tanh in tanhs:
        # GELU input: the tensor squared by Mul(x, x) in the same block; output: the input of
        # the next MatMul (the second feed-forward layer) reached from Tanh
        square = [
            n
            for n in graph.node
            if n.op_type == "Mul"
            and n.input[0] == n.input[1]
            and n.name.split("/")[1] == tanh.name.split("/")[1]
        ]
        assert len(square) == 1
        tensor = tanh.output[0]
        while (nxt := consumers[tensor][0]).op_type != "MatMul":
            tensor = nxt.output[0]
        pairs.append((square[0].input[0], tensor))
    for x, y in pairs:
        for name in (x, y):
            graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    feeds, _ = digits_test_data
    outs = _session(model).run([n for p in pairs for n in p], {k: v[:64] for k, v in feeds.items()})
    for i in range(len(pairs)):
        x, y = outs[2 * i], outs[2 * i + 1]
        assert x.size >= 64 * 17 * 128
        np.testing.assert_allclose(y, _tanh_gelu(x), rtol=1e-5, atol=1e-6)


def test_train_split_is_the_rest_of_the_digits(
    digits_test_data: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    from gelu_quant.models.digits_vit import digits_train_data

    pixels, labels = digits_train_data()
    info = digits_vit_info()
    assert pixels.dtype == np.float32 and labels.dtype == np.int64
    assert len(labels) == info["n_train"] and pixels.shape == (info["n_train"], 8, 8)
    digits = datasets.load_digits()
    every = Counter(
        (img.astype(np.float32).tobytes(), int(t))
        for img, t in zip(digits.images / 16.0, digits.target, strict=True)
    )
    feeds, test_labels = digits_test_data
    split = Counter(
        (img.tobytes(), int(t))
        for img, t in [
            *zip(pixels, labels, strict=True),
            *zip(feeds[INPUT_NAME], test_labels, strict=True),
        ]
    )
    assert split == every  # train + test is the whole data set, each image once
