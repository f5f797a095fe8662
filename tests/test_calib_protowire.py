"""The probe spliced at the protobuf wire level parses to the probe built on a ModelProto."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _calib_models import batches, bias_gelu_model, two_gelu_model

from gelu_quant.calib.collector import build_probe, collect, open_probe
from gelu_quant.calib.protowire import _encode_varint, _varint, replace_graph_outputs


def _spliced(model: onnx.ModelProto, sites: list) -> onnx.ModelProto:  # type: ignore[type-arg]
    shell = onnx.ModelProto()
    build_probe(shell, sites, in_place=True)
    data = replace_graph_outputs(model.SerializeToString(), shell.graph.SerializeToString())
    assert data is not None
    return onnx.load_model_from_string(data)


@pytest.mark.parametrize("make", [two_gelu_model, bias_gelu_model])
def test_splice_equals_probe_built_on_the_parsed_model(make: object) -> None:
    model, sites = make()  # type: ignore[operator]
    # a graph with every kind of field: doc string, value_info, metadata; outputs in between
    model.graph.doc_string = "d" * 300  # a length prefix of two bytes
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("zz", 1, [2]))
    model.metadata_props.add(key="k", value="v")
    expected, _, _ = build_probe(model, sites)
    assert _spliced(model, sites) == expected


def test_splice_of_large_weights_keeps_them_byte_for_byte() -> None:
    model, sites = two_gelu_model()
    big = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(big, "unused_big"))
    got = _spliced(model, sites)
    arr = {t.name: t for t in got.graph.initializer}["unused_big"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(arr), big)
    assert got == build_probe(model, sites)[0]


def test_unusual_layouts_are_declined() -> None:
    model, _ = two_gelu_model()
    raw = model.SerializeToString()
    # a second graph field (protobuf merges it into the first): not spliced
    extra = onnx.ModelProto()
    extra.graph.name = "more"
    assert replace_graph_outputs(raw + extra.SerializeToString(), b"") is None
    assert replace_graph_outputs(onnx.ModelProto(ir_version=8).SerializeToString(), b"") is None
    assert replace_graph_outputs(raw[:-3], b"") is None  # truncated
    assert replace_graph_outputs(b"\x0b\x00", b"") is None  # a group (wire type 3)


def test_open_probe_on_unusual_bytes_falls_back_to_the_parsed_model() -> None:
    model, sites = two_gelu_model()
    extra = onnx.ModelProto()
    extra.graph.doc_string = "merged in"
    raw = model.SerializeToString() + extra.SerializeToString()
    data = batches(2)
    via_bytes = collect(open_probe(raw, sites, threads=1), sites, ({"x": b} for b in data))
    via_model = collect(model, sites, ({"x": b} for b in data), threads=1)
    assert via_bytes.stats == via_model.stats


def test_varints_round_trip() -> None:
    for v in [0, 1, 127, 128, 300, 2**31, 2**63 - 1]:
        enc = _encode_varint(v)
        assert _varint(memoryview(enc), 0) == (v, len(enc))
    with pytest.raises(ValueError):
        _varint(memoryview(b"\xff\xff"), 0)
