"""Tiny random-initialised Hugging Face models of many architectures, exported to ONNX many ways.

What third-party models look like to gelu-quant: every GELU spelling that ``transformers``
activations, ``torch.onnx`` (TorchScript exporter at opset 17 and 20, dynamo exporter), ONNX
Runtime's transformer optimizer, a float16 conversion and ORT's QDQ quantizer write. Nothing is
downloaded: every model is built from a config written here (``HF_HUB_OFFLINE=1``, no
``from_pretrained``) with seeded random weights, hidden size 32, 2 layers, small vocabularies and
images, so one export takes about a second.

Architectures (:data:`ARCHITECTURES`): GPT-2 (``gelu_new``), CLIP vision (``quick_gelu``), T5
with ``feed_forward_proj="gated-gelu"``, ViT, DistilBERT, BLOOM (its own ``BloomGelu`` module),
Phi (``gelu_new``), ConvNeXt, the Whisper encoder (``F.gelu`` called directly after its
convolutions), and a BERT for each GELU ``hidden_act`` of ``transformers.activations.ACT2FN``
(``gelu``, ``gelu_10``, ``gelu_fast``, ``gelu_new``, ``gelu_python``, ``gelu_pytorch_tanh``,
``gelu_python_tanh``, ``gelu_accurate``, ``quick_gelu``) plus BERTs with ``silu`` and ``mish``,
which have no GELU. Each model is wrapped to take numpy-friendly tensors and return one float
tensor, ``output`` (the last hidden state, or the pooled features of the vision models).

Exporters (:data:`EXPORTERS`):

- ``opset17``, ``opset20``: ``torch.onnx.export(dynamo=False)`` at that opset;
- ``dynamo``: ``torch.onnx.export(dynamo=True)`` at opset 18; a model the exporter cannot take
  raises :class:`ExporterLimitation` with the exporter's message (the failure is cached too);
- ``ort-optimized``: ``opset17`` through ``onnxruntime.transformers.optimizer.optimize_model``
  (the model type ORT knows for the architecture, ``bert`` otherwise);
- ``fp16``: ``opset17`` converted by ``onnxruntime.transformers.float16`` (float16 weights and
  activations, float32 model inputs and outputs: ``keep_io_types=True``);
- ``qdq``: ``opset20`` (one ``Gelu`` op per site) quantized by ``quantize_static`` in QDQ format
  (int8 activations and weights, MinMax on 4 seeded random batches), so each GELU sits between a
  ``DequantizeLinear`` and a ``QuantizeLinear``.

The oracle for how many GELUs a model has is PyTorch itself (:func:`torch_gelu_count`): one
forward pass counting calls of GELU activation modules (forward hooks on every module whose class
is one of :data:`GELU_MODULE_CLASSES`) and calls of ``torch.nn.functional.gelu`` made outside such
modules (a ``TorchFunctionMode``). ``ClippedGELUActivation`` (``gelu_10``) counts as one GELU: the
clip after it is not part of the site, discovery finds the GELU inside and conversion keeps the
``Clip``.

``python -m gelu_quant.models.architectures --table`` prints, for every architecture and exporter,
PyTorch's count, the sites found with their variant and spelling, the relative output error of the
``fp32-poly`` conversion (``max |y − y_ref| / max |y_ref|`` against the same export's ORT output,
worst of the evaluation batches) and the worst cosine of the ``int8-lut`` conversion, both
converted from the calibrator's ranges over :data:`CALIBRATION_SEEDS` and evaluated on the
disjoint :data:`EVALUATION_SEEDS` (a few minutes for the whole matrix).

Choices forced by the exporters and ORT (transformers 5.24, torch 2.13, ORT 1.32):

- GPT-2, Phi and BLOOM take an ``attention_mask``: without one transformers' masking code calls
  ``torch.diff`` (packed-sequence detection), which the TorchScript exporter cannot export
  (``UnsupportedOperatorError: Exporting the operator 'aten::diff' to ONNX opset version 17``);
- TorchScript exports have a dynamic batch axis: with static shapes everywhere ORT's optimizer
  writes Gemm/Reshape fusions on which ORT fails to open the session (``Attempt to replace the
  existing tensor``);
- 1-D parameters get seeded noise (:func:`_perturb_vectors`): with all-zero biases the
  exporter shares one initializer between layers;
- ORT's optimizer runs with ``model_type="bert"`` for BLOOM and Phi (``"phi"`` raises
  ``TypeError: 'method' object is not iterable`` on a TorchScript export; ``"gpt2"`` writes
  graphs ORT cannot load);
- the float16 model's nodes are sorted topologically (:func:`_sort_topologically`).

Exports are cached (:mod:`gelu_quant.models.cache`) under a key of the library versions and the
settings of this module.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.models.cache import cached_build, read_meta
from gelu_quant.models.ort_quantize import quantize_qdq

MODEL_FILE = "model.onnx"
FAILURE_FILE = "export-failure.txt"
MAX_IR_VERSION = 10  # onnxruntime 1.31 rejects onnx 1.23's default IR version 14
OUTPUT_NAME = "output"
EXPORTERS: tuple[str, ...] = ("opset17", "opset20", "dynamo", "ort-optimized", "fp16", "qdq")
BATCH = 2
SEQUENCE = 8
VOCAB = 96
HIDDEN = 32
HEADS = 4
LAYERS = 2
INTERMEDIATE = 64
IMAGE = 32
SEED = 0

# Bump "format" when the code below changes what it writes.
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 3,
    "seed": SEED,
    "batch": BATCH,
    "sequence": SEQUENCE,
    "sizes": {
        "vocab": VOCAB,
        "hidden": HIDDEN,
        "heads": HEADS,
        "layers": LAYERS,
        "intermediate": INTERMEDIATE,
        "image": IMAGE,
    },
    "attn_implementation": "eager",
    # weights std 0.3 instead of 0.02: GELU inputs then span about ±4, its curved part, rather
    # than ±0.2 where any approximation of x/2 passes
    "initializer_range": 0.3,
    "vector_noise": 0.1,
    "max_ir_version": MAX_IR_VERSION,
    "opset17": {"exporter": "torchscript", "opset": 17},
    "opset20": {"exporter": "torchscript", "opset": 20},
    "dynamo": {"exporter": "dynamo", "opset": 18, "drop_node_metadata": True},
    "ort-optimized": {"base": "opset17", "opt_level": 1},
    "fp16": {"base": "opset17", "converter": "onnxruntime.transformers.float16", "keep_io": True},
    "qdq": {
        "base": "opset20",
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "calibrate_method": "MinMax",
        "calibration_batches": 4,
        "calibration_seed": 1000,
    },
}

_EXTRAS_HINT = "install the model extras: `pip install -e '.[models]'`"


class ExporterLimitation(ModelError):
    """An exporter cannot export this model (the message is the exporter's own)."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (batch first), and how to fill it."""

    name: str
    shape: tuple[int, ...]
    kind: str
    """``tokens`` (int64 in ``[0, VOCAB)``), ``mask`` (int64 ones, the last row's tail zero) or
    ``float`` (float32 standard normal)."""


@dataclass(frozen=True)
class Architecture:
    """One tiny model: how to build it and what it takes."""

    name: str
    family: str
    """The ``transformers`` model class it is built from."""
    activation: str
    """The GELU (or other) activation its feed-forward blocks use, as the config names it."""
    inputs: tuple[InputSpec, ...]
    ort_model_type: str
    """``model_type`` for ORT's transformer optimizer."""
    has_gelu: bool = True

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)


def _text(*names: str) -> tuple[InputSpec, ...]:
    kinds = {"input_ids": "tokens", "decoder_input_ids": "tokens", "attention_mask": "mask"}
    return tuple(InputSpec(n, (BATCH, SEQUENCE), kinds[n]) for n in names)


_IMAGE = (InputSpec("pixel_values", (BATCH, 3, IMAGE, IMAGE), "float"),)

BERT_GELU_ACTS: tuple[str, ...] = (
    "gelu",
    "gelu_10",
    "gelu_fast",
    "gelu_new",
    "gelu_python",
    "gelu_pytorch_tanh",
    "gelu_python_tanh",
    "gelu_accurate",
    "quick_gelu",
)
"""Every GELU ``hidden_act`` of ``transformers.activations.ACT2FN`` (transformers 5.x)."""
BERT_OTHER_ACTS: tuple[str, ...] = ("silu", "mish")


def _architectures() -> dict[str, Architecture]:
    archs = [
        Architecture("gpt2", "GPT2Model", "gelu_new", _text("input_ids", "attention_mask"), "bert"),
        Architecture("clip-vision", "CLIPVisionModel", "quick_gelu", _IMAGE, "clip"),
        Architecture(
            "t5-gated-gelu", "T5Model", "gated-gelu", _text("input_ids", "decoder_input_ids"), "t5"
        ),
        Architecture("vit", "ViTModel", "gelu", _IMAGE, "vit"),
        Architecture(
            "distilbert", "DistilBertModel", "gelu", _text("input_ids", "attention_mask"), "bert"
        ),
        Architecture(
            "bloom", "BloomModel", "bloom_gelu", _text("input_ids", "attention_mask"), "bert"
        ),
        Architecture("phi", "PhiModel", "gelu_new", _text("input_ids", "attention_mask"), "bert"),
        Architecture("convnext", "ConvNextModel", "gelu", _IMAGE, "vit"),
        Architecture(
            "whisper-encoder",
            "WhisperEncoder",
            "gelu",
            (InputSpec("input_features", (BATCH, 16, 32), "float"),),
            "bert",
        ),
    ]
    for act in BERT_GELU_ACTS + BERT_OTHER_ACTS:
        archs.append(
            Architecture(
                f"bert-{act}",
                "BertModel",
                act,
                _text("input_ids", "attention_mask"),
                "bert",
                has_gelu=act in BERT_GELU_ACTS,
            )
        )
    return {a.name: a for a in archs}


ARCHITECTURES: dict[str, Architecture] = _architectures()


def architecture(name: str) -> Architecture:
    """The architecture called ``name`` (BadInputError naming the choices otherwise)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise BadInputError(
            f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}"
        ) from None


# -- inputs ----------------------------------------------------------------
def make_inputs(name: str, seed: int, batch: int = BATCH) -> dict[str, np.ndarray]:
    """Seeded random inputs of architecture ``name``: ``{input name: array}``, batch ``batch``."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in architecture(name).inputs:
        shape = (batch, *spec.shape[1:])
        if spec.kind == "tokens":
            feeds[spec.name] = rng.integers(0, VOCAB, size=shape, dtype=np.int64)
        elif spec.kind == "mask":
            mask = np.ones(shape, dtype=np.int64)
            mask[-1, shape[1] // 2 :] = 0
            feeds[spec.name] = mask
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


# -- torch models ----------------------------------------------------------------
def _config(arch: Architecture) -> Any:
    import transformers as tf

    common: dict[str, Any] = {"attn_implementation": EXPORT_SETTINGS["attn_implementation"]}
    init = EXPORT_SETTINGS["initializer_range"]
    text: dict[str, Any] = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 1}
    text["pad_token_id"] = 2
    if arch.family == "BertModel":
        return tf.BertConfig(
            initializer_range=init,
            **text,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            max_position_embeddings=64,
            hidden_act=arch.activation,
            **common,
        )
    if arch.family == "GPT2Model":
        return tf.GPT2Config(
            initializer_range=init,
            **text,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            activation_function=arch.activation,
            **common,
        )
    if arch.family == "CLIPVisionModel":
        return tf.CLIPVisionConfig(
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            image_size=IMAGE,
            patch_size=8,
            hidden_act=arch.activation,
            **common,
        )
    if arch.family == "T5Model":
        return tf.T5Config(
            **text,
            d_model=HIDDEN,
            d_kv=HIDDEN // HEADS,
            d_ff=INTERMEDIATE,
            num_layers=LAYERS,
            num_decoder_layers=LAYERS,
            num_heads=HEADS,
            feed_forward_proj=arch.activation,
            **{"decoder_start_token_id": 0, **common},
        )
    if arch.family == "ViTModel":
        return tf.ViTConfig(
            initializer_range=init,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            image_size=IMAGE,
            patch_size=8,
            hidden_act=arch.activation,
            **common,
        )
    if arch.family == "DistilBertModel":
        return tf.DistilBertConfig(
            initializer_range=init,
            **text,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTERMEDIATE,
            max_position_embeddings=64,
            activation=arch.activation,
            **common,
        )
    if arch.family == "BloomModel":
        return tf.BloomConfig(
            **text,
            hidden_size=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            initializer_range=init,
            **common,
        )
    if arch.family == "PhiModel":
        return tf.PhiConfig(
            initializer_range=init,
            **text,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=64,
            hidden_act=arch.activation,
            **common,
        )
    if arch.family == "ConvNextModel":
        return tf.ConvNextConfig(
            initializer_range=init,
            num_channels=3,
            patch_size=4,
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            hidden_act=arch.activation,
            image_size=IMAGE,
        )
    if arch.family == "WhisperEncoder":
        return tf.WhisperConfig(
            **text,
            num_mel_bins=16,
            d_model=HIDDEN,
            encoder_layers=LAYERS,
            encoder_attention_heads=HEADS,
            encoder_ffn_dim=INTERMEDIATE,
            decoder_layers=1,
            decoder_attention_heads=HEADS,
            decoder_ffn_dim=INTERMEDIATE,
            max_source_positions=16,
            max_target_positions=16,
            activation_function=arch.activation,
            init_std=init,
            decoder_start_token_id=0,
            **common,
        )
    raise ModelError(f"no config for family {arch.family!r}")  # pragma: no cover


def build_torch_model(name: str) -> Any:
    """Architecture ``name`` as a torch module in eval mode with seeded random weights.

    ``module(*tensors)`` takes the inputs in :attr:`Architecture.input_names` order and returns
    one float32 tensor (``output``).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import transformers as tf
    except ImportError as exc:
        raise ModelError(f"torch and transformers are needed: {_EXTRAS_HINT}") from exc
    arch = architecture(name)
    config = _config(arch)
    torch.manual_seed(SEED)
    if arch.family == "WhisperEncoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        inner: Any = WhisperEncoder(config)
    else:
        inner = getattr(tf, arch.family)(config)
    _perturb_vectors(inner, EXPORT_SETTINGS["vector_noise"])
    inner.eval()
    names = arch.input_names
    family = arch.family

    class Wrapped(torch.nn.Module):
        """The model with positional tensor inputs and one tensor output."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            kwargs: dict[str, Any] = dict(zip(names, tensors, strict=True))
            if family in ("GPT2Model", "BloomModel", "PhiModel", "T5Model"):
                kwargs["use_cache"] = False
            out = self.model(**kwargs, return_dict=True)
            if family in ("CLIPVisionModel", "ConvNextModel"):
                result: torch.Tensor = out.pooler_output
                return result
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    return Wrapped(inner).eval()


def _perturb_vectors(model: Any, std: float) -> None:
    """Add seeded noise to every 1-D parameter (biases, norm weights).

    Random initialisation leaves biases at 0 and norm weights at 1; the TorchScript exporter then
    folds the identical tensors into one initializer shared by several layers (a Gemm of layer 1
    reading layer 0's bias), which trained models never have.
    """
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.dim() == 1:
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                param.add_(noise * std)


def torch_inputs(feeds: Mapping[str, np.ndarray], name: str) -> tuple[Any, ...]:
    """The feeds of :func:`make_inputs` as torch tensors in the model's input order."""
    import torch

    return tuple(torch.from_numpy(np.asarray(feeds[n])) for n in architecture(name).input_names)


def torch_output(name: str, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The torch model's ``output`` for ``feeds`` (float32 numpy)."""
    import torch

    model = build_torch_model(name)
    with torch.no_grad():
        out: np.ndarray = model(*torch_inputs(feeds, name)).numpy()
    return out


# -- the PyTorch oracle: how many GELUs run ------------------------------------------------
def gelu_module_classes() -> tuple[type, ...]:
    """Module classes that compute a GELU: ``nn.GELU`` and transformers' GELU activations."""
    import torch
    from transformers import activations as acts
    from transformers.models.bloom import modeling_bloom

    names = (
        "GELUActivation",
        "NewGELUActivation",
        "FastGELUActivation",
        "QuickGELUActivation",
        "GELUTanh",
        "PytorchGELUTanh",
        "ClippedGELUActivation",
        "AccurateGELUActivation",
    )
    classes: list[type] = [torch.nn.GELU, modeling_bloom.BloomGelu]
    classes += [getattr(acts, n) for n in names if hasattr(acts, n)]
    return tuple(dict.fromkeys(classes))


def torch_gelu_count(name: str, feeds: Mapping[str, np.ndarray] | None = None) -> int:
    """How many GELUs one forward pass of architecture ``name`` computes (PyTorch's count)."""
    model = build_torch_model(name)
    return count_gelu_calls(model, torch_inputs(feeds or make_inputs(name, SEED), name))


def count_gelu_calls(model: Any, args: Sequence[Any]) -> int:
    """GELUs computed by ``model(*args)``: calls of GELU activation modules, plus calls of
    ``torch.nn.functional.gelu`` made outside such modules.

    Each module call counts once whatever it does inside (a clipped GELU is one GELU); modules
    are recognised by class (:func:`gelu_module_classes`), functional calls by a
    ``TorchFunctionMode``.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    classes = gelu_module_classes()
    state = {"depth": 0, "modules": 0, "functional": 0}

    def pre(_module: Any, _args: Any) -> None:
        state["depth"] += 1
        state["modules"] += 1

    def post(_module: Any, _args: Any, _out: Any) -> None:
        state["depth"] -= 1

    class CountGelu(TorchFunctionMode):
        def __torch_function__(
            self,
            func: Any,
            types: Any,
            args: Sequence[Any] = (),
            kwargs: Mapping[str, Any] | None = None,
        ) -> Any:
            if func is torch.nn.functional.gelu and state["depth"] == 0:
                state["functional"] += 1
            return func(*args, **(kwargs or {}))

    handles = []
    for module in model.modules():
        if isinstance(module, classes):
            hooked: Any = module
            handles.append(hooked.register_forward_pre_hook(pre))
            handles.append(hooked.register_forward_hook(post))
    try:
        with torch.no_grad(), CountGelu():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return state["modules"] + state["functional"]


# -- exports ----------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def _settings_for(name: str, exporter: str) -> dict[str, Any]:
    if exporter not in EXPORTERS:
        raise BadInputError(f"unknown exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    arch = architecture(name)
    settings: dict[str, Any] = {
        "architecture": arch.name,
        "family": arch.family,
        "activation": arch.activation,
        "exporter": exporter,
        "format": EXPORT_SETTINGS["format"],
        "common": {k: v for k, v in EXPORT_SETTINGS.items() if k not in EXPORTERS},
        "export": EXPORT_SETTINGS[exporter],
        "versions": {
            d: _version(d) for d in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")
        },
    }
    base = EXPORT_SETTINGS[exporter].get("base")
    if base is not None:
        settings["base"] = _settings_for(name, base)
    return settings


def export_entry(name: str, exporter: str, cache_dir: Path | None = None) -> Path:
    """The cache folder of ``name`` exported by ``exporter`` (built on first use)."""
    settings = _settings_for(name, exporter)
    builders: dict[str, Callable[[Path], dict[str, Any]]] = {
        "opset17": lambda f: _export_torchscript(name, f, 17),
        "opset20": lambda f: _export_torchscript(name, f, 20),
        "dynamo": lambda f: _export_dynamo(name, f),
        "ort-optimized": lambda f: _optimize_ort(name, f, cache_dir),
        "fp16": lambda f: _convert_fp16(name, f, cache_dir),
        "qdq": lambda f: _quantize_qdq(name, f, cache_dir),
    }
    return cached_build(f"arch-{name}-{exporter}", settings, builders[exporter], cache_dir)


def export_onnx(name: str, exporter: str, cache_dir: Path | None = None) -> Path:
    """Path of ``name`` exported by ``exporter``, cached.

    Raises :class:`ExporterLimitation` (with the exporter's message) when the exporter could not
    export the model; that outcome is cached like a model.
    """
    entry = export_entry(name, exporter, cache_dir)
    failure = entry / FAILURE_FILE
    if failure.is_file():
        raise ExporterLimitation(f"{exporter} cannot export {name}: {failure.read_text()}")
    return entry / MODEL_FILE


def export_facts(name: str, exporter: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """What the build recorded (``meta.json``): settings, build time, fused operators…"""
    return read_meta(export_entry(name, exporter, cache_dir))


def _cap_ir_version(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found = model.ir_version
    if found > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))
    return {"ir_version_written": found, "ir_version": model.ir_version}


def _dynamic_axes(name: str) -> dict[str, dict[int, str]]:
    """Batch dynamic for every input and the output, as exports for deployment have it.

    (Static shapes everywhere make ORT's transformer optimizer write Gemm/Reshape fusions on
    which ORT 1.32 fails to open the session: ``Attempt to replace the existing tensor``.)
    """
    axes = {spec.name: {0: "batch"} for spec in architecture(name).inputs}
    axes[OUTPUT_NAME] = {0: "batch"}
    return axes


def _export_torchscript(name: str, folder: Path, opset: int) -> dict[str, Any]:
    import torch

    model = build_torch_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch_inputs(make_inputs(name, SEED), name),
            str(folder / MODEL_FILE),
            input_names=list(architecture(name).input_names),
            output_names=[OUTPUT_NAME],
            dynamic_axes=_dynamic_axes(name),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return _cap_ir_version(folder / MODEL_FILE)


def _export_dynamo(name: str, folder: Path) -> dict[str, Any]:
    import torch

    model = build_torch_model(name)
    try:
        with warnings.catch_warnings(), _quiet_stdout():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                torch_inputs(make_inputs(name, SEED), name),
                input_names=list(architecture(name).input_names),
                output_names=[OUTPUT_NAME],
                opset_version=EXPORT_SETTINGS["dynamo"]["opset"],
                dynamo=True,
                verbose=False,
            )
        if program is None:
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    except Exception as e:  # the exporter's limitation, recorded for export_onnx to raise
        text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        (folder / FAILURE_FILE).write_text(text)
        return {"failure": text}
    for node in program.model.graph.all_nodes():  # source paths: keep the bytes reproducible
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)
    written = int(program.model.ir_version)
    program.model.ir_version = min(written, MAX_IR_VERSION)
    program.save(str(folder / MODEL_FILE), external_data=False)
    return {"ir_version_written": written, "ir_version": int(program.model.ir_version)}


class _quiet_stdout:
    """Silence what the dynamo exporter prints to stdout (its progress lines)."""

    def __enter__(self) -> None:
        self._saved = sys.stdout
        sys.stdout = open(os.devnull, "w")

    def __exit__(self, *exc: object) -> None:
        sys.stdout.close()
        sys.stdout = self._saved


def _import_ort_optimizer() -> Any:
    """``optimize_model``; ORT's optimizer needs its own folder on ``sys.path`` (see minilm)."""
    import onnxruntime.transformers as ort_transformers

    folder = os.path.dirname(ort_transformers.__file__)
    if folder not in sys.path:
        sys.path.append(folder)
    from onnxruntime.transformers.optimizer import optimize_model

    return optimize_model


def _optimize_ort(name: str, folder: Path, cache_dir: Path | None) -> dict[str, Any]:
    optimize_model = _import_ort_optimizer()
    base = export_onnx(name, EXPORT_SETTINGS["ort-optimized"]["base"], cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(base),
            model_type=architecture(name).ort_model_type,
            num_heads=HEADS,
            hidden_size=HIDDEN,
            opt_level=EXPORT_SETTINGS["ort-optimized"]["opt_level"],
        )
    optimized.save_model_to_file(str(folder / MODEL_FILE))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return {"fused_operators": fused, **_cap_ir_version(folder / MODEL_FILE)}


def _convert_fp16(name: str, folder: Path, cache_dir: Path | None) -> dict[str, Any]:
    import onnx

    _import_ort_optimizer()  # float16.py is one of the optimizer's sibling modules
    from onnxruntime.transformers.float16 import convert_float_to_float16

    base = export_onnx(name, EXPORT_SETTINGS["fp16"]["base"], cache_dir)
    model = onnx.load(str(base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=EXPORT_SETTINGS["fp16"]["keep_io"])
    moved = _sort_topologically(half.graph)
    onnx.save(half, str(folder / MODEL_FILE))
    return {"nodes_moved_by_topological_sort": moved, **_cap_ir_version(folder / MODEL_FILE)}


def _sort_topologically(graph: Any) -> int:
    """Put the nodes of ``graph`` in topological order (stable); return how many moved.

    ORT's float16 converter appends the ``Cast`` of each float model input at the end of the node
    list (``keep_io_types=True``); ORT runs such a graph, but ``onnx.checker`` refuses it and so
    does ``gelu-quant convert``.
    """
    nodes = []
    for original in graph.node:  # copies: the repeated field is cleared below
        node = type(original)()
        node.CopyFrom(original)
        nodes.append(node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    placed: list[Any] = []
    pending = nodes
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                placed.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ModelError("the float16 model's graph has a cycle or an undefined input")
        pending = rest
    moved = sum(a is not b for a, b in zip(nodes, placed, strict=True))
    del graph.node[:]
    graph.node.extend(placed)
    return moved


def calibration_batches(name: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` seeded random batches (seeds ``seed``, ``seed + 1``, …)."""
    return [make_inputs(name, seed + i) for i in range(count)]


def _quantize_qdq(name: str, folder: Path, cache_dir: Path | None) -> dict[str, Any]:
    opts = EXPORT_SETTINGS["qdq"]
    base = export_onnx(name, opts["base"], cache_dir)
    batches = calibration_batches(name, opts["calibration_batches"], opts["calibration_seed"])

    quantize_qdq(base, folder, MODEL_FILE, batches, opts)
    return _cap_ir_version(folder / MODEL_FILE)


# -- running ----------------------------------------------------------------
def run_onnx(path: Path | str, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """ORT's ``output`` of the model at ``path`` (one thread, float32)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    out = session.run([OUTPUT_NAME], {k: v for k, v in feeds.items() if k in wanted})[0]
    return np.asarray(out, dtype=np.float32)


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """``max |candidate − reference| / max |reference|`` in float64."""
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    return float(np.max(np.abs(c - r)) / max(float(np.max(np.abs(r))), 1e-30))


def cosine(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Cosine similarity of the two outputs, flattened, in float64."""
    c = np.asarray(candidate, dtype=np.float64).ravel()
    r = np.asarray(reference, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(c)) * float(np.linalg.norm(r))
    return float(c @ r) / max(norms, 1e-300)


CALIBRATION_SEEDS = (100, 4)
"""Calibration inputs: 4 batches, seeds 100…103 (disjoint from the evaluation seeds)."""
EVALUATION_SEEDS = (200, 2)
"""Evaluation inputs: 2 batches, seeds 200, 201."""


def _table_row(name: str, exporter: str, count: int, work: Path) -> dict[str, Any]:
    from gelu_quant.calib.calibration import calibrate_model
    from gelu_quant.calib.ranges_file import load_ranges
    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.graph.discover import find_gelu_sites

    row: dict[str, Any] = {"architecture": name, "exporter": exporter, "torch": count}
    try:
        path = export_onnx(name, exporter)
    except ExporterLimitation as e:
        row["error"] = str(e)
        return row
    sites = find_gelu_sites(path)
    row["sites"] = len(sites)
    row["spellings"] = sorted({f"{s.form}/{s.spelling}" for s in sites})
    if not sites:
        return row
    evals = calibration_batches(name, EVALUATION_SEEDS[1], EVALUATION_SEEDS[0])
    refs = [run_onnx(path, f) for f in evals]
    folder = work / f"{name}-{exporter}"
    folder.mkdir(parents=True, exist_ok=True)
    ranges = folder / "ranges.json"
    try:
        calibrate_model(
            path,
            calibration_batches(name, CALIBRATION_SEEDS[1], CALIBRATION_SEEDS[0]),
            ranges,
            threads=1,
        )
    except Exception as e:
        row["error"] = f"calibrate: {type(e).__name__}: {e}"
        return row
    for target, key in (("fp32-poly", "fp32_poly_rel"), ("int8-lut", "int8_lut_cos")):
        out = folder / f"{target}.onnx"
        try:
            result = convert_file(
                path, out, ConvertConfig(target=target, verify=False), ranges=load_ranges(ranges)
            )
        except Exception as e:
            row[key] = f"{type(e).__name__}: {str(e)[:80]}"
            continue
        row[f"{target}_converted"] = len(result.manifest.converted)
        try:
            outs = [run_onnx(out, f) for f in evals]
        except Exception as e:
            row[key] = f"run: {type(e).__name__}: {str(e)[-80:]}"
            continue
        if target == "fp32-poly":
            row[key] = max(relative_error(o, r) for o, r in zip(outs, refs, strict=True))
        else:
            row[key] = min(cosine(o, r) for o, r in zip(outs, refs, strict=True))
    return row


def table_rows(
    names: Sequence[str] | None = None, exporters: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """One row per architecture and exporter: counts, spellings, conversion errors."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gq-arch-") as tmp:
        for name in names or list(ARCHITECTURES):
            count = torch_gelu_count(name)
            for exporter in exporters or EXPORTERS:
                yield _table_row(name, exporter, count, Path(tmp))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gelu_quant.models.architectures --table [--arch NAME] [--exporter E]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the markdown table")
    parser.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    parser.add_argument("--exporter", action="append", help="only this exporter (repeatable)")
    args = parser.parse_args(argv)
    if not args.table:
        parser.print_help()
        return 0
    cols = ["architecture", "exporter", "torch", "sites", "spellings", "fp32_poly_rel"]
    cols += ["int8_lut_cos", "error"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in table_rows(args.arch, args.exporter):
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(", ".join(v) if isinstance(v, list) else _fmt(v))
        print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
