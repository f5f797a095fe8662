"""Session-scoped fixtures shared by the test modules: the real models and the built-in corpus.

The MiniLM fixtures return paths into the models cache (``$GELU_QUANT_CACHE`` or
``~/.cache/gelu-quant``): the first run of a session exports, later runs reuse the files. Tests
that use them are slow and carry ``@pytest.mark.slow``. Helpers may append fixtures below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _minilm(variant: str) -> Path:
    minilm = pytest.importorskip("gelu_quant.models.minilm")
    path: Path = minilm.minilm_onnx(variant)
    return path


@pytest.fixture(scope="session")
def minilm_opset17() -> Path:
    """all-MiniLM-L6-v2, TorchScript export at opset 17 (6 Erf-pattern GELUs)."""
    return _minilm("opset17")


@pytest.fixture(scope="session")
def minilm_opset20() -> Path:
    """all-MiniLM-L6-v2, TorchScript export at opset 20 (6 ONNX ``Gelu`` ops)."""
    return _minilm("opset20")


@pytest.fixture(scope="session")
def minilm_dynamo() -> Path:
    """all-MiniLM-L6-v2, dynamo export at opset 18 (Erf pattern), weights in external data."""
    return _minilm("dynamo")


@pytest.fixture(scope="session")
def minilm_ort_optimized() -> Path:
    """all-MiniLM-L6-v2 after ORT's transformer optimizer (6 ``com.microsoft`` BiasGelu)."""
    return _minilm("ort-optimized")


@pytest.fixture(scope="session")
def minilm_qdq() -> Path:
    """all-MiniLM-L6-v2 with QDQ int8 feed-forward blocks (``quantize_static``)."""
    return _minilm("qdq")


@pytest.fixture(scope="session")
def minilm_tokenizer_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2's ``tokenizer.json``."""
    minilm = pytest.importorskip("gelu_quant.models.minilm")
    path: Path = minilm.minilm_tokenizer_dir()
    return path


@pytest.fixture(scope="session")
def corpus_calibration() -> list[str]:
    """All sentences of the built-in corpus's calibration half (a fresh list per session)."""
    from gelu_quant.models.corpus import stdlib_sentences

    return stdlib_sentences("calibration")


@pytest.fixture(scope="session")
def corpus_evaluation() -> list[str]:
    """All sentences of the built-in corpus's evaluation half (disjoint from calibration)."""
    from gelu_quant.models.corpus import stdlib_sentences

    return stdlib_sentences("evaluation")


@pytest.fixture(scope="session")
def digits_vit_model() -> Path:
    """The committed digits ViT (tanh GELU, opset 17): ``models/fixtures/digits_vit.onnx``."""
    from gelu_quant.models.digits_vit import digits_vit_path

    return digits_vit_path()


@pytest.fixture(scope="session")
def digits_test_data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The digits ViT's held-out test split: ``({"pixels": float32 [n, 8, 8]}, labels int64)``."""
    from gelu_quant.models.digits_vit import digits_test_data as load

    return load()
