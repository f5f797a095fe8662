"""Third-party architectures: every GELU that exporters write is found, and converts right.

Tiny random-initialised ``transformers`` models (:mod:`gelu_quant.models.architectures`), each
exported six ways (TorchScript at opset 17 and 20, dynamo, ORT's transformer optimizer, float16,
ORT QDQ). The oracles are independent of the code under test:

- how many GELUs: PyTorch itself (GELU module calls and ``F.gelu`` calls in one forward pass);
- which function each one computes: what ``transformers`` writes for the activation (table
  :data:`EXPECTED_FORM`, read from ``transformers/activations.py`` and the model sources);
- that each replaced site was that GELU: the ``fp32-poly`` conversion reproduces the original
  model's ORT output within 1e-5 relative (``max |y − y_ref| / max |y_ref|`` over the evaluation
  batches), with the exceptions for float16 and QDQ models stated at :func:`test_fp32_poly_...`;
- ``int8-lut`` stays close: cosine ≥ 0.98 to the original (flattened output, worst batch),
  calibrated on inputs disjoint from the evaluation inputs.

Every case must pass: an input that itself fails ``onnx.checker`` (ORT's optimizer writes
contrib ops in the default domain; ORT's float16 converter leaves Casts out of order) is
converted with a manifest note rather than refused.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.errors import ModelError
from gelu_quant.graph.convert import ConvertConfig, ConvertResult, convert_file
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.models import architectures as archs

pytestmark = pytest.mark.slow

EXPECTED_FORM: dict[str, str] = {
    "gelu": "exact",  # nn.functional.gelu
    "gelu_10": "exact",  # clip(gelu(x), -10, 10): the GELU inside is the site, the Clip stays
    "gelu_python": "exact",  # x * 0.5 * (1 + erf(x / sqrt 2))
    "gelu_fast": "tanh",  # 0.5 x (1 + tanh(x * 0.7978845608 * (1 + 0.044715 x x)))
    "gelu_new": "tanh",  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_pytorch_tanh": "tanh",  # nn.functional.gelu(approximate="tanh")
    "gelu_python_tanh": "tanh",
    "gelu_accurate": "tanh",
    "bloom_gelu": "tanh",  # BloomGelu: x * 0.5 * (1 + tanh(0.79788456 x (1 + 0.044715 x x)))
    "gated-gelu": "tanh",  # T5: gelu_new on wi_0, times wi_1
    "quick_gelu": "quick",  # x * sigmoid(1.702 x)
}
"""The function each activation computes, by the name the config gives it."""

GELU_ARCHS = [name for name, a in archs.ARCHITECTURES.items() if a.has_gelu]
NO_GELU_ARCHS = [name for name, a in archs.ARCHITECTURES.items() if not a.has_gelu]
ALL_CASES = [(n, e) for n in archs.ARCHITECTURES for e in archs.EXPORTERS]
GELU_CASES = [(n, e) for n in GELU_ARCHS for e in archs.EXPORTERS]

REL_TOL = 1e-5
MIN_COSINE = 0.98

CALLS_F_GELU = {"gelu", "gelu_10", "gelu_pytorch_tanh"}
"""Activations that call ``torch.nn.functional.gelu`` (exported at opset 20 as one ``Gelu`` op);
the others are written out op by op, and ORT's quantizer puts Q/DQ pairs inside them."""

CORE_ARCHS = ("gpt2", "vit")
FP32_POLY_CASES = [(n, "opset17") for n in GELU_ARCHS] + [
    (n, e) for n in CORE_ARCHS for e in archs.EXPORTERS if e != "opset17"
]
"""fp32-poly cases (2.5-6 s each today, most of it fitting the polynomials): every architecture
at opset 17, every export of the core ones; ``python -m gelu_quant.models.architectures --table``
measures the whole matrix."""


def _params(target: str) -> Iterator[object]:
    cases = FP32_POLY_CASES if target == "fp32-poly" else GELU_CASES
    for name, exporter in cases:
        yield pytest.param(name, exporter, id=f"{name}-{exporter}")


def _export(name: str, exporter: str) -> Path:
    try:
        return archs.export_onnx(name, exporter)
    except archs.ExporterLimitation as e:  # a known exporter limitation, not a pass
        pytest.skip(str(e))


@cache
def _torch_count(name: str) -> int:
    return archs.torch_gelu_count(name)


_WORK = Path(tempfile.mkdtemp(prefix="gq-test-arch-"))  # shared by the cached helpers below
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


@cache
def _ranges(name: str, exporter: str) -> Path:
    """The calibrator's ranges for the export, from the calibration batches."""
    path = _export(name, exporter)
    out = _WORK / f"{name}-{exporter}.ranges.json"
    seed, count = archs.CALIBRATION_SEEDS
    calibrate_model(path, archs.calibration_batches(name, count, seed), out, threads=1)
    return out


def _evaluation(name: str) -> list[dict[str, np.ndarray]]:
    seed, count = archs.EVALUATION_SEEDS
    return archs.calibration_batches(name, count, seed)


def _convert(name: str, exporter: str, target: str) -> tuple[Path, ConvertResult]:
    src = _export(name, exporter)
    dst = _WORK / f"{name}-{exporter}.{target}.onnx"
    ranges = load_ranges(_ranges(name, exporter))
    return dst, convert_file(src, dst, ConvertConfig(target=target), ranges=ranges)


def _assert_every_site_converted_as_its_form(name: str, result: ConvertResult) -> None:
    expected = EXPECTED_FORM[archs.architecture(name).activation]
    records = result.manifest.sites
    assert len(records) == _torch_count(name)
    for record in records:
        assert record.status == "converted", f"{record.id}: {record.reason}"
        assert record.spec is not None and record.spec["form"] == expected, record.id


# -- the oracle itself ----------------------------------------------------------------
def test_torch_count_counts_modules_and_functional_calls_once() -> None:
    import torch
    from transformers.activations import ClippedGELUActivation, NewGELUActivation

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.GELU()
            self.b = NewGELUActivation()
            self.c = ClippedGELUActivation(-10.0, 10.0)  # calls a GELU module inside: one GELU
            self.d = torch.nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.gelu(self.a(x))  # module, then a bare F.gelu: two
            return self.d(self.c(self.b(x)))

    assert archs.count_gelu_calls(Block(), (torch.randn(2, 3),)) == 4


def test_torch_counts_follow_the_architectures() -> None:
    layers = archs.LAYERS
    assert _torch_count("bert-gelu") == layers
    assert _torch_count("t5-gated-gelu") == 2 * layers  # encoder and decoder
    assert _torch_count("whisper-encoder") == layers + 2  # F.gelu after each of the 2 convs
    assert _torch_count("convnext") == 2  # one block per stage, 2 stages
    assert all(_torch_count(n) == 0 for n in NO_GELU_ARCHS)


@pytest.mark.parametrize("name", list(archs.ARCHITECTURES))
def test_opset17_export_computes_what_torch_computes(name: str) -> None:
    feeds = archs.make_inputs(name, archs.EVALUATION_SEEDS[0])
    onnx_out = archs.run_onnx(archs.export_onnx(name, "opset17"), feeds)
    assert archs.relative_error(onnx_out, archs.torch_output(name, feeds)) <= 1e-5


# -- discovery ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "exporter"), ALL_CASES, ids=[f"{n}-{e}" for n, e in ALL_CASES])
def test_sites_found_equal_torch_count_and_compute_that_gelu(name: str, exporter: str) -> None:
    path = _export(name, exporter)
    sites = find_gelu_sites(path)
    assert len(sites) == _torch_count(name)
    arch = archs.architecture(name)
    if arch.has_gelu:
        assert {s.form for s in sites} == {EXPECTED_FORM[arch.activation]}
    expected_dtype = "float16" if exporter == "fp16" else "float32"
    assert {s.dtype for s in sites} <= {expected_dtype}
    if exporter == "qdq":  # each GELU between the quantizer's DequantizeLinear and its reader
        assert all(s.qdq_in is not None for s in sites)


@pytest.mark.parametrize("name", NO_GELU_ARCHS)
def test_models_without_gelu_are_refused_cleanly(name: str) -> None:
    src = archs.export_onnx(name, "opset17")
    with pytest.raises(ModelError, match="no GELU"):
        convert_file(src, _WORK / f"{name}.onnx", ConvertConfig(target="int8-lut", range=(-8, 8)))


# -- conversion ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "exporter"), list(_params("fp32-poly")))
def test_fp32_poly_reproduces_the_original_output(name: str, exporter: str) -> None:
    """fp32-poly is near-exact, so the converted model is the original model.

    float16 exports: the original computes GELU in float16, so both are compared with the float32
    export (``opset17``): the converted model is no farther from it than 1.5× the original is.
    QDQ exports whose GELU is spelled out carry ORT's Q/DQ pairs inside the GELU, which the site
    replaces: the converted model must be at least as close to the float model (``opset20``) as
    the QDQ model is (cosine within 2e-3); sites without inner pairs keep the 1e-5 bound.
    """
    src = _export(name, exporter)
    dst, result = _convert(name, exporter, "fp32-poly")
    _assert_every_site_converted_as_its_form(name, result)
    feeds = _evaluation(name)
    refs = [archs.run_onnx(src, f) for f in feeds]
    outs = [archs.run_onnx(dst, f) for f in feeds]
    if exporter == "fp16":
        base = archs.export_onnx(name, "opset17")
        floats = [archs.run_onnx(base, f) for f in feeds]
        for out, ref, flt in zip(outs, refs, floats, strict=True):
            assert archs.relative_error(out, flt) <= 1.5 * archs.relative_error(ref, flt)
        return
    inner_qdq = exporter == "qdq" and archs.architecture(name).activation not in CALLS_F_GELU
    if inner_qdq:
        assert all("QuantizeLinear" in _op_types(src, s.nodes) for s in find_gelu_sites(src))
        base = archs.export_onnx(name, "opset20")
        floats = [archs.run_onnx(base, f) for f in feeds]
        for out, ref, flt in zip(outs, refs, floats, strict=True):
            assert archs.cosine(out, flt) >= archs.cosine(ref, flt) - 2e-3
        return
    worst = max(archs.relative_error(o, r) for o, r in zip(outs, refs, strict=True))
    assert worst <= REL_TOL


@pytest.mark.parametrize(("name", "exporter"), list(_params("int8-lut")))
def test_int8_lut_runs_and_stays_close(name: str, exporter: str) -> None:
    src = _export(name, exporter)
    dst, result = _convert(name, exporter, "int8-lut")
    _assert_every_site_converted_as_its_form(name, result)
    feeds = _evaluation(name)
    for feed in feeds:
        assert archs.cosine(archs.run_onnx(dst, feed), archs.run_onnx(src, feed)) >= MIN_COSINE


def _op_types(path: Path, nodes: tuple[str, ...]) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    wanted = set(nodes)
    return [n.op_type for n in graph.node if n.name in wanted]
