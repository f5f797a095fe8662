"""all-MiniLM-L6-v2 exports: interface, GELU spelling per variant, agreement with torch.

Oracles: the vocabulary file read here for the tokenizer; float64 masked-mean pooling written here;
the pretrained torch model (run through transformers) for every ONNX variant run by ORT; op types
counted straight from the ONNX protos.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

minilm = pytest.importorskip("gelu_quant.models.minilm")

from gelu_quant.errors import ModelError  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Return the absolute value of a number.",
    "hi",
    "Raise ValueError if the argument is not a positive integer, otherwise return its square "
    "root rounded down to the nearest integer, as math.isqrt does for every non-negative input.",
]
FLOAT_VARIANTS = ["opset17", "opset20", "dynamo", "ort-optimized"]
# op type (domain-qualified) -> count of the GELU spelling each variant must contain
GELU_OPS = {
    "opset17": {"ai.onnx:Erf": 6},
    "opset20": {"ai.onnx:Gelu": 6},
    "dynamo": {"ai.onnx:Erf": 6},
    "ort-optimized": {"com.microsoft:BiasGelu": 6},
    "qdq": {"ai.onnx:Erf": 6},
}
GELU_LIKE = {"Erf", "Gelu", "BiasGelu", "FastGelu", "Tanh"}


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _op_counts(path: Path) -> Counter[str]:
    model = onnx.load(str(path), load_external_data=False)
    return Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)


def _vocab() -> dict[str, int]:
    lines = (minilm.minilm_tokenizer_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


def test_tokenize_shapes_dtypes_and_ids() -> None:
    batch = minilm.tokenize(["Hello world.", "the"], max_length=8)
    assert sorted(batch) == sorted(minilm.INPUT_NAMES)
    for arr in batch.values():
        assert arr.dtype == np.int64 and arr.shape == (2, 8)
    vocab = _vocab()
    expected = [vocab[t] for t in ["[CLS]", "hello", "world", ".", "[SEP]"]] + [vocab["[PAD]"]] * 3
    assert batch["input_ids"][0].tolist() == expected
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]
    assert not batch["token_type_ids"].any()


def test_tokenize_truncates_to_max_length() -> None:
    batch = minilm.tokenize([" ".join(["word"] * 50)], max_length=10)
    vocab = _vocab()
    assert batch["input_ids"][0].tolist() == [vocab["[CLS]"]] + [vocab["word"]] * 8 + [
        vocab["[SEP]"]
    ]
    assert batch["attention_mask"].all()


def test_tokenize_rejects_a_bare_string_and_bad_length() -> None:
    with pytest.raises(TypeError):
        minilm.tokenize("one text")
    with pytest.raises(ValueError):
        minilm.tokenize(["a"], max_length=1000)


def test_mean_pool_matches_float64_loop() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=np.int64)
    got = minilm.mean_pool(hidden, mask)
    for row in range(3):
        kept = [hidden[row, t].astype(np.float64) for t in range(5) if mask[row, t]]
        mean = sum(kept) / len(kept)
        np.testing.assert_allclose(got[row], mean / np.sqrt((mean**2).sum()), rtol=1e-12)


def test_unknown_variant_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="opset17"):
        minilm.minilm_onnx("opset99")


@pytest.mark.slow
def test_tokenize_matches_transformers_tokenizer() -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(
        str(minilm.minilm_tokenizer_dir()), local_files_only=True
    )
    ref = tok(TEXTS, padding="max_length", truncation=True, max_length=24, return_tensors="np")
    got = minilm.tokenize(TEXTS, max_length=24)
    for name in minilm.INPUT_NAMES:
        np.testing.assert_array_equal(got[name], ref[name])


@pytest.mark.slow
@pytest.mark.parametrize("variant", FLOAT_VARIANTS)
def test_float_variant_matches_torch(variant: str) -> None:
    path = minilm.minilm_onnx(variant)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == list(minilm.INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == list(minilm.OUTPUT_NAMES)
    # two shapes: dynamic batch and sequence axes
    for texts, length in [(TEXTS, 128), (TEXTS[:1], 9)]:
        feeds = minilm.tokenize(texts, max_length=length)
        ref_hidden, ref_emb = minilm.torch_outputs(feeds)
        hidden, emb = session.run(None, feeds)
        assert hidden.shape == (len(texts), length, minilm.HIDDEN_SIZE)
        assert emb.shape == (len(texts), minilm.HIDDEN_SIZE)
        np.testing.assert_allclose(hidden, ref_hidden, atol=1e-3)
        cosine = (emb.astype(np.float64) * ref_emb).sum(axis=1)
        assert cosine.min() > 0.9999
        # the sentence_embedding output is the masked mean of last_hidden_state, normalised
        np.testing.assert_allclose(
            emb, minilm.mean_pool(hidden, feeds["attention_mask"]), atol=1e-5
        )


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(GELU_OPS))
def test_variant_spells_its_six_gelus(variant: str) -> None:
    path = minilm.minilm_onnx(variant)
    counts = _op_counts(path)
    gelu_like = {op: n for op, n in counts.items() if op.split(":")[1] in GELU_LIKE}
    assert gelu_like == GELU_OPS[variant]
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    assert model.ir_version <= minilm.MAX_IR_VERSION
    assert all(o.version <= 21 for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.slow
def test_dynamo_keeps_weights_in_external_data_beside_the_model() -> None:
    path = minilm.minilm_onnx("dynamo")
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) > 90  # every weight matrix
    locations = {e.value for t in external for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    assert (path.parent / "model.onnx.data").is_file()


@pytest.mark.slow
def test_qdq_wraps_the_gelus_and_stays_close_to_fp32() -> None:
    path = minilm.minilm_onnx("qdq")
    model = onnx.load(str(path))
    producer = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for erf in (n for n in model.graph.node if n.op_type == "Erf"):
        div = producer[erf.input[0]]
        assert div.op_type == "Div"
        assert producer[div.input[0]].op_type == "DequantizeLinear"  # GELU input comes from DQ
        assert consumers[erf.output[0]] == ["QuantizeLinear"]  # ORT's extra Q/DQ inside GELU
    feeds = minilm.tokenize(TEXTS, max_length=64)
    _, ref_emb = minilm.torch_outputs(feeds)
    _, emb = _session(path).run(None, feeds)
    cosine = (emb.astype(np.float64) * ref_emb).sum(axis=1)
    assert cosine.mean() > 0.85  # int8 feed-forward blocks: close to fp32, not equal


def test_ort_optimizer_import_survives_a_restored_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's optimizer imports siblings as top-level modules; a restored sys.path broke it."""
    import os
    import sys

    import onnxruntime.transformers as ort_transformers

    from gelu_quant.models.minilm import _import_ort_optimizer

    folder = os.path.dirname(ort_transformers.__file__)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != folder])
    for name in ("onnxruntime.transformers.optimizer", "fusion_options"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert callable(_import_ort_optimizer())
