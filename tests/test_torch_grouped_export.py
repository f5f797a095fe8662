"""Grouped fake-quant GELUs export as per-axis Q/DQ, and ``convert`` collapses per-axis
``DQ -> GELU -> Q`` into one grouped-table op: a QAT-trained digits ViT run by ONNX Runtime gives
every GELU site the output codes of the PyTorch module, and a hand-written per-axis pattern with
three groups gives every code of every channel the float64 table entry of its group."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

from gelu_quant.errors import ModelError  # noqa: E402
from gelu_quant.graph.convert import ConvertConfig, convert_file, convert_model  # noqa: E402
from gelu_quant.graph.discover import find_gelu_sites  # noqa: E402
from gelu_quant.graph.sites import GeluSite  # noqa: E402
from gelu_quant.lut.grouped import GroupedLutSpec, partition_channels  # noqa: E402
from gelu_quant.lut.spec import spec_from_json  # noqa: E402
from gelu_quant.lut.table import LutSpec, build_lut  # noqa: E402
from gelu_quant.models.digits_vit import build_model, digits_train_data  # noqa: E402
from gelu_quant.qparams import QParams  # noqa: E402
from gelu_quant.torch import GroupedGeluFakeQuant, export_qat_onnx  # noqa: E402

K = 3


def _channel_ranges(model: torch.nn.Module, x: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    """Per-channel min/max of every GELU's input (module name -> (lo, hi))."""
    seen: dict[str, np.ndarray] = {}
    gelus = [n for n, m in model.named_modules() if isinstance(m, torch.nn.GELU)]
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, a, n=n: seen.__setitem__(n, a[0].reshape(-1, a[0].shape[-1]).numpy())
        )
        for n in gelus
    ]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return {n: (a.min(0).astype(np.float64), a.max(0).astype(np.float64)) for n, a in seen.items()}


def _grouped_qat_model(
    bits: int, out_bits: int | None = None
) -> tuple[torch.nn.Module, list[GroupedGeluFakeQuant]]:
    """The seeded digits ViT with each GELU a K-group table (channels partitioned by their
    calibrated ranges), trained a few steps so that every group's scales move."""
    torch.manual_seed(0)
    model = build_model().eval()
    x, y = digits_train_data()
    x, y = x[:256], y[:256]
    fqs = []
    for name, (lo, hi) in _channel_ranges(model, x).items():
        part = partition_channels(lo, hi, K)
        tables = [
            build_lut(
                in_range=(min(float(lo[part == g].min()), -1e-3), float(hi[part == g].max())),
                in_dtype="int8",
                out_dtype="int8",
                form="tanh",  # the digits ViT's GELU
                in_bits=bits,
                out_bits=out_bits or bits,
            )
            for g in range(int(part.max()) + 1)
        ]
        spec = GroupedLutSpec(groups=tuple(tables), channel_group=part)
        fq = GroupedGeluFakeQuant.from_spec(spec, learn_ranges=True)
        fq.site_id = f"gelu{len(fqs)}"
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, fq)
        fqs.append(fq)
    before = [fq.spec() for fq in fqs]
    scales = {id(p) for fq in fqs for p in (fq.in_scale, fq.out_scale)}
    weights = [p for p in model.parameters() if id(p) not in scales]
    opt = torch.optim.Adam(
        [  # Adam moves each scale by about lr a step: small enough for the smallest scale
            {"params": weights, "lr": 3e-3},
            {"params": [p for fq in fqs for p in (fq.in_scale, fq.out_scale)], "lr": 1e-4},
        ]
    )
    for i in range(2):  # two steps: Adam moves every scale with a gradient
        idx = slice(64 * i, 64 * (i + 1))
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    for fq, b in zip(fqs, before, strict=True):
        assert fq.groups == K
        for k in range(K):  # every group's qparams moved away from the calibrated ones
            assert fq.spec().groups[k].in_qparams != b.groups[k].in_qparams
            assert fq.spec().groups[k].out_qparams != b.groups[k].out_qparams
    return model.eval(), fqs


def _per_channel(spec: GroupedLutSpec) -> list[tuple[LutSpec, int]]:
    """Each channel's table (qparams and entries): the grouping itself may be renumbered."""
    return [(spec.groups[int(g)], c) for c, g in enumerate(spec.channel_group)]


def _with_site_outputs(path: Path) -> tuple[bytes, list[tuple[str, str, str]]]:
    """The converted model with, per GeluGroupedLut, its float input (before the per-axis
    QuantizeLinear), input codes and output codes as extra outputs."""
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    sites = []
    for n in m.graph.node:
        if n.op_type.startswith("GeluGroupedLut"):
            p = producer[n.input[0]]
            while p.op_type != "QuantizeLinear":  # Clip for low-bit codes
                p = producer[p.input[0]]
            assert [a.i for a in p.attribute if a.name == "axis"] == [-1]
            sites.append((p.input[0], n.input[0], n.output[0]))
    for names in sites:
        for t in names:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
    return m.SerializeToString(), sites


@pytest.mark.parametrize(("bits", "out_bits"), [(8, 8), (4, 4), (6, 8)])
def test_grouped_export_convert_ort_reproduces_every_gelu_site(
    tmp_path: Path, bits: int, out_bits: int
) -> None:
    model, fqs = _grouped_qat_model(bits, out_bits)
    x = digits_train_data()[0][256:512]
    src, dst = tmp_path / "qat.onnx", tmp_path / "qat.gq.onnx"
    export_qat_onnx(
        model,
        (torch.from_numpy(x[:2]),),
        src,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
    )
    exported = onnx.load(str(src))
    per_axis = [
        n
        for n in exported.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        and any(a.name == "axis" for a in n.attribute)
    ]
    assert len(per_axis) == 8  # Q -> DQ -> GELU -> Q -> DQ per site
    result = convert_file(src, dst, ConvertConfig(target="int8-lut"))
    records = [r for r in result.manifest.sites if r.status == "converted"]
    assert len(records) == len(fqs) == 2
    for r, fq in zip(records, fqs, strict=True):  # the trained tables, channel by channel
        assert r.mode == "qdq" and r.range_source == "qdq"
        assert r.op_type is not None and r.op_type.startswith("GeluGroupedLut")
        assert r.spec is not None and len(r.spec["groups"]) == K
        got = spec_from_json(r.spec)
        assert isinstance(got, GroupedLutSpec)
        assert _per_channel(got) == _per_channel(fq.spec())
        assert got.groups[0].table.size == 2**bits
        assert {(g.in_qparams.bits, g.out_qparams.bits) for g in got.groups} == {(bits, out_bits)}
    blob, sites = _with_site_outputs(dst)
    assert len(sites) == 2
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"pixels": x}), strict=True))
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a: seen.__setitem__(mod.site_id, a[0])) for m in fqs
    ]
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    for fq, (x_name, cin_name, cout_name) in zip(fqs, sites, strict=True):
        x_ort = torch.from_numpy(outs[x_name])
        # same input -> the same input and output codes, every element of every channel
        assert np.array_equal(fq.input_codes(x_ort).numpy(), outs[cin_name].astype(np.int64))
        assert np.array_equal(fq.output_codes(x_ort).numpy(), outs[cout_name].astype(np.int64))
        # each runtime on its own input: float32 differences upstream move few codes
        # (measured: 4 and 17 of 557056 at 8 bits, none at 4)
        own = fq.output_codes(seen[fq.site_id]).numpy()
        assert np.mean(own == outs[cout_name]) > 0.999
    # logits of magnitude ~1; measured max difference 1.0e-5 (8-bit), 4.8e-7 (4-bit), the same
    # as the exported model's before conversion
    ort_logits = outs["logits"]
    assert np.array_equal(ort_logits.argmax(1), logits.argmax(1))
    np.testing.assert_allclose(ort_logits, logits, rtol=0, atol=1e-3)


def _tiny_grouped(bits: int = 8) -> GroupedGeluFakeQuant:
    groups = [
        (QParams(0.05, -10, "int8", bits), QParams(0.04, -100, "int8", bits)),
        (QParams(0.02, 3, "int8", bits), QParams(0.01, -60, "int8", bits)),
    ]
    return GroupedGeluFakeQuant(groups, [0, 1, 1, 0], "exact")


def test_grouped_export_refuses_opsets_without_per_axis_q(tmp_path: Path) -> None:
    m = torch.nn.Sequential(_tiny_grouped())
    with pytest.raises(ModelError, match="opset"):
        export_qat_onnx(m, (torch.zeros(2, 4),), tmp_path / "m.onnx", opset=12)


def test_grouped_export_refuses_groups_of_different_widths(tmp_path: Path) -> None:
    groups = [
        (QParams(0.05, -10, "int8", 8), QParams(0.04, -100, "int8", 8)),
        (QParams(0.2, 0, "int8", 4), QParams(0.1, -6, "int8", 4)),
    ]
    m = torch.nn.Sequential(GroupedGeluFakeQuant(groups, [0, 1], "exact"))
    with pytest.raises(ModelError, match="code widths"):
        export_qat_onnx(m, (torch.zeros(2, 2),), tmp_path / "m.onnx")


# -- a per-axis pattern written by hand --------------------------------------------------------

# three groups of (input scale, input zp, output scale, output zp) over 7 channels
_GROUPS = [(0.06, -20, 0.045, -110), (0.015, 5, 0.008, -90), (0.11, 0, 0.09, -125)]
_CHANNEL_GROUP = [2, 0, 1, 0, 2, 1, 1]


def _per_axis_model(axis: int, groups: list[tuple[float, int, float, int]]) -> onnx.ModelProto:
    """int8 codes ``X [N, C]`` -> per-axis DQ -> Gelu -> per-axis Q -> ``Y`` (opset 20)."""
    cg = _CHANNEL_GROUP if len(groups) == 3 else list(range(len(groups)))
    col = [groups[g] for g in cg]
    inits = [
        numpy_helper.from_array(np.array([c[0] for c in col], np.float32), "s_in"),
        numpy_helper.from_array(np.array([c[1] for c in col], np.int8), "z_in"),
        numpy_helper.from_array(np.array([c[2] for c in col], np.float32), "s_out"),
        numpy_helper.from_array(np.array([c[3] for c in col], np.int8), "z_out"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["X", "s_in", "z_in"], ["x"], "dq", axis=axis),
        helper.make_node("Gelu", ["x"], ["g"], "gelu"),
        helper.make_node("QuantizeLinear", ["g", "s_out", "z_out"], ["Y"], "q", axis=axis),
    ]
    c = len(col)
    graph = helper.make_graph(
        nodes,
        "per_axis_gelu",
        [helper.make_tensor_value_info("X", TensorProto.INT8, ["n", c])],
        [helper.make_tensor_value_info("Y", TensorProto.INT8, ["n", c])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def _oracle(code: int, s_in: float, z_in: int, s_out: float, z_out: int) -> int:
    """Q_out(GELU(DQ_in(code))) in float64: round half to even, saturate to int8."""
    x = (code - z_in) * float(np.float32(s_in))
    g = 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    return int(np.clip(np.rint(g / float(np.float32(s_out))) + z_out, -128, 127))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, {"X": x})[0]
    return out


@pytest.mark.parametrize("axis", [1, -1])
def test_hand_written_per_axis_pattern_collapses_into_k_tables(axis: int) -> None:
    model = _per_axis_model(axis, _GROUPS)
    (site,) = find_gelu_sites(model)
    assert site.qdq_in is None and site.qdq_in_axis is not None
    assert site.qdq_out_axis is not None and site.qdq_out_axis.on_last_axis
    assert GeluSite.from_json(site.to_json()) == site
    codes = np.arange(-128, 128, dtype=np.int8)
    x = np.repeat(codes[:, None], len(_CHANNEL_GROUP), axis=1)
    before = _run(model, x)  # ORT's own per-axis DQ -> Gelu -> Q
    result = convert_model(model, ConvertConfig(target="int8-lut"))
    (rec,) = result.manifest.sites
    assert rec.status == "converted" and rec.mode == "qdq"
    assert rec.op_type is not None and rec.op_type.startswith("GeluGroupedLut")
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == [rec.op_type]  # DQ -> GELU -> Q is gone
    spec = spec_from_json(rec.spec or {})
    assert isinstance(spec, GroupedLutSpec) and len(spec.groups) == K
    got = _run(result.model, x)
    want = np.array(
        [[_oracle(int(q), *_GROUPS[g]) for g in _CHANNEL_GROUP] for q in codes], np.int8
    )
    assert np.array_equal(got, want)
    assert np.array_equal(spec.lookup(x), want)
    deq = (x.astype(np.float64) - _col(1)) * _col(0).astype(np.float32)
    assert np.array_equal(spec.evaluate(deq.astype(np.float32)), _dq_out(want))
    # ORT's float32 Gelu differs from the float64 table on codes near a rounding boundary only
    assert np.mean(before == want) > 0.99


def _col(i: int) -> np.ndarray:
    return np.array([_GROUPS[g][i] for g in _CHANNEL_GROUP], np.float64)


def _dq_out(codes: np.ndarray) -> np.ndarray:
    s = _col(2).astype(np.float32)
    return ((codes.astype(np.float32) - _col(3).astype(np.float32)) * s).astype(np.float32)


def test_per_axis_on_another_axis_is_left_unconverted() -> None:
    model = _per_axis_model(0, _GROUPS)  # axis 0 of [n, C]: not the channel axis
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 7
    with pytest.raises(ModelError, match="last axis"):
        convert_model(model, ConvertConfig(target="int8-lut"))


def test_per_axis_with_too_many_groups_is_left_unconverted() -> None:
    groups = [(0.01 + 0.001 * i, 0, 0.01, -100) for i in range(80)]
    with pytest.raises(ModelError, match="at most 64 groups"):
        convert_model(_per_axis_model(1, groups), ConvertConfig(target="int8-lut"))


@pytest.mark.parametrize("opset", [13, 20])
def test_a_lone_grouped_module_round_trips_bit_for_bit(tmp_path: Path, opset: int) -> None:
    """At opset 20 the export writes the Gelu op (erf pattern before); the converted model's
    float output is the module's forward exactly (both are ``(code - zp) · scale`` in float32 of
    the same codes)."""
    fq = _tiny_grouped()
    x = torch.from_numpy(np.random.default_rng(7).normal(0.0, 2.5, (64, 4)).astype(np.float32))
    src, dst = tmp_path / "m.onnx", tmp_path / "m.gq.onnx"
    export_qat_onnx(torch.nn.Sequential(fq), (x,), src, opset=opset, input_names=["x"])
    ops = {n.op_type for n in onnx.load(str(src)).graph.node}
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
    result = convert_file(src, dst, ConvertConfig(target="int8-lut"))
    assert [r.status for r in result.manifest.sites] == ["converted"]
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = fq(x).numpy()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_per_tensor_export_reads_the_opset_too(tmp_path: Path) -> None:
    """The exporter's opset is read from torch's current globals: a per-tensor fake-quant GELU
    at opset 20 is the Gelu op too, and converts to the module's forward exactly."""
    from gelu_quant.torch import GeluFakeQuant

    fq = GeluFakeQuant(QParams(0.05, -10, "int8"), QParams(0.04, -100, "int8"), "exact")
    x = torch.from_numpy(np.random.default_rng(8).normal(0.0, 2.5, (64, 4)).astype(np.float32))
    src, dst = tmp_path / "m.onnx", tmp_path / "m.gq.onnx"
    export_qat_onnx(torch.nn.Sequential(fq), (x,), src, opset=20, input_names=["x"])
    assert "Gelu" in {n.op_type for n in onnx.load(str(src)).graph.node}
    convert_file(src, dst, ConvertConfig(target="int8-lut"))
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = fq(x).numpy()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
