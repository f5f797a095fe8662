"""The GeluGroupedLut op: both bodies agree with the spec's lookup on every code of every
channel in ONNX Runtime and onnx.reference, at opset 17 (spelled-out formula) and 21."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from gelu_quant.errors import SpecError
from gelu_quant.graph.ops import custom_op
from gelu_quant.graph.ops.grouped_lut_op import all_codes_probe, channel_model, grouped_lut_op
from gelu_quant.graph.ops.op_runners import run_ort, run_reference
from gelu_quant.lut.grouped import build_grouped_lut, partition_channels


def _spec(out_dtype: str = "int8", form: str = "exact", seed: int = 0):
    rng = np.random.default_rng(seed)
    C = 20
    lo, hi = -rng.uniform(0.5, 9, C), rng.uniform(0.5, 24, C)
    groups = partition_channels(lo, hi, 5)
    return build_grouped_lut(
        groups,
        lambda m: (float(lo[m].min()), float(hi[m].max())),
        out_dtype=out_dtype,  # type: ignore[arg-type]
        form=form,  # type: ignore[arg-type]
    )


def _three_way(op, spec) -> None:
    m = channel_model(op, spec.channels)
    onnx.checker.check_model(m, full_check=True)
    x, want = all_codes_probe(spec)
    # the oracle: each column's codes looked up in its own group's table, written out here
    manual = np.stack(
        [
            spec.groups[g].table[x[:, c].astype(np.int64) + 128]
            for c, g in enumerate(spec.channel_group)
        ],
        axis=1,
    )
    assert np.array_equal(want, manual)
    assert np.array_equal(run_ort(m, x), want)
    # onnx.reference runs per-axis Q/DQ from opset 19 on; int8 semantics are those of opset 13
    ref = channel_model(dataclasses.replace(op, opset=max(op.opset, 21)), spec.channels)
    assert np.array_equal(run_reference(ref, x), want)


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("form", ["exact", "tanh"])
def test_formula_body_on_every_code(opset: int, form: str) -> None:
    spec = _spec(form=form)
    op = custom_op(spec, opset=opset, lut_body="formula")
    assert op.op_type.startswith("GeluGroupedLut_")
    assert op.body_kind == "formula", op.notes
    _three_way(op, spec)


@pytest.mark.parametrize("out_dtype", ["int8", "float16"])
def test_gather_elements_body_on_every_code(out_dtype: str) -> None:
    spec = _spec(out_dtype=out_dtype, seed=1)
    op = grouped_lut_op(spec, opset=17, lut_body="gather-elements")
    assert op.body_kind == "gather-elements"
    _three_way(op, spec)


def test_float16_output_has_no_formula_body() -> None:
    """Float16 entries are finer than float32 GELU's error: no formula body is proved, and
    asking for one is refused; ``auto`` is the table."""
    spec = _spec(out_dtype="float16", seed=2)
    with pytest.raises(SpecError, match="cannot prove a formula body"):
        custom_op(spec, opset=21, lut_body="formula")
    op = custom_op(spec, opset=21)
    assert op.body_kind == "gather-elements"
    _three_way(op, spec)


def test_the_wide_probe_covers_every_code_at_every_position() -> None:
    """The probe of a 16k-channel tensor: every code of every channel, each code of a group at
    all 16 positions modulo 16 of the flattened tensor."""
    rng = np.random.default_rng(4)
    C = 64
    lo, hi = -rng.uniform(0.5, 9, C), rng.uniform(0.5, 24, C)
    spec = build_grouped_lut(partition_channels(lo, hi, 4), [(-9.0, 24.0)] * 4)
    x, _ = all_codes_probe(spec)
    codes = x.astype(np.int64)
    for c in range(C):
        assert set(codes[:, c]) == set(range(-128, 128))
    pos = np.arange(x.size).reshape(x.shape) % 16
    for k in (-128, -1, 0, 77, 127):
        assert set(pos[codes == k]) == set(range(16))
    op = custom_op(spec, opset=17, lut_body="formula")
    assert op.body_kind == "formula"
    _three_way(op, spec)
