"""Export -> convert -> ONNX Runtime reproduces a QAT-trained model: every GELU site computes the
same output codes from the same input, with the trained scales, at 8 and 4 bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

from gelu_quant.graph.convert import ConvertConfig, convert_file  # noqa: E402
from gelu_quant.lut.spec import spec_from_json  # noqa: E402
from gelu_quant.models.digits_vit import build_model, digits_train_data  # noqa: E402
from gelu_quant.torch import (  # noqa: E402
    calibrate_ranges,
    export_qat_onnx,
    fake_quant_modules,
    prepare_qat,
)


def _trained_qat_model(bits: int) -> tuple[torch.nn.Module, np.ndarray]:
    torch.manual_seed(0)
    model = build_model().eval()
    x, y = digits_train_data()
    x, y = x[:256], y[:256]
    ranges = calibrate_ranges(model, [(torch.from_numpy(x),)], "minmax")
    model = prepare_qat(model, ranges, bits=bits, learn_ranges=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = [(m.in_qparams, m.out_qparams) for m in fake_quant_modules(model)]
    for i in range(4):  # a few QAT steps: the scales move away from the calibrated ones
        idx = slice(64 * i, 64 * (i + 1))
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [(m.in_qparams, m.out_qparams) for m in fake_quant_modules(model)]
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in zip(after, before, strict=True))
    return model.eval(), digits_train_data()[0][256:512]


def _with_site_outputs(path: Path) -> tuple[bytes, list[tuple[str, str, str]]]:
    """The converted model with, per GeluLut, its float input (before QuantizeLinear), input
    codes and output codes as extra outputs."""
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    sites = []
    for n in m.graph.node:
        if n.op_type.startswith("GeluLut"):
            codes_in = n.input[0]
            p = producer[codes_in]
            while p.op_type != "QuantizeLinear":  # Clip for low-bit codes
                p = producer[p.input[0]]
            sites.append((p.input[0], codes_in, n.output[0]))
    for names in sites:
        for t in names:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
    return m.SerializeToString(), sites


@pytest.mark.parametrize("bits", [8, 4])
def test_export_convert_ort_reproduces_every_gelu_site(tmp_path: Path, bits: int) -> None:
    model, x = _trained_qat_model(bits)
    src, dst = tmp_path / "qat.onnx", tmp_path / "qat.gq.onnx"
    export_qat_onnx(
        model,
        (torch.from_numpy(x[:2]),),
        src,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
    )
    result = convert_file(src, dst, ConvertConfig(target="int8-lut"))
    fqs = fake_quant_modules(model)
    records = [r for r in result.manifest.sites if r.status == "converted"]
    assert len(records) == len(fqs) == 2
    for r, fq in zip(records, fqs, strict=True):  # the trained table, low-bit codes included
        assert spec_from_json(r.spec) == fq.spec()
        assert spec_from_json(r.spec).table.size == 2**bits  # type: ignore[attr-defined]
    blob, sites = _with_site_outputs(dst)
    assert len(sites) == 2
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"pixels": x}), strict=True))
    # torch, recording each fake-quant GELU's own input
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a: seen.__setitem__(mod.site_id, a[0])) for m in fqs
    ]
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    for fq, (x_name, cin_name, cout_name) in zip(fqs, sites, strict=True):
        x_ort = outs[x_name]
        lo, hi = fq.in_qparams.qmin, fq.in_qparams.qmax
        assert outs[cin_name].min() >= lo and outs[cin_name].max() <= hi
        # same input -> the same input and output codes, every element
        got_in = fq.input_codes(torch.from_numpy(x_ort)).numpy()
        got_out = fq.output_codes(torch.from_numpy(x_ort)).numpy()
        assert np.array_equal(got_in, outs[cin_name].astype(np.int64))
        assert np.array_equal(got_out, outs[cout_name].astype(np.int64))
        # each runtime on its own input: the float32 differences upstream move few codes
        own = fq.output_codes(seen[fq.site_id]).numpy()
        assert np.mean(own == outs[cout_name]) > 0.995
    ort_logits = outs["logits"]
    assert np.mean(ort_logits.argmax(1) == logits.argmax(1)) >= 0.99
    np.testing.assert_allclose(ort_logits, logits, atol=0.05)
