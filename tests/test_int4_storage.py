"""Low-bit table codes stored as ONNX INT4/UINT4 (opset 21) instead of an 8-bit container.

Oracles: the element types read back from the saved model (initializers, shape inference),
the 8-bit-container conversion of the same site (existing path) run in ORT on the same inputs,
bit for bit, and each op fed every one of its codes in ORT and onnx.reference against float64
GELU quantized here."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx.version_converter
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from gelu_quant.cli.main import main
from gelu_quant.device_export import export_folder
from gelu_quant.errors import BadInputError
from gelu_quant.graph.convert import ConvertConfig, convert_file, convert_model
from gelu_quant.graph.ops.op_runners import reference_evaluator
from gelu_quant.lut.ckernels import find_c_compiler
from gelu_quant.lut.spec import spec_from_json

FOUR = {TensorProto.INT4: "int4", TensorProto.UINT4: "uint4"}


@pytest.fixture(scope="module")
def vit21(digits_vit_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits ViT (2 tanh GELUs, opset 17) upgraded to opset 21 by onnx's converter."""
    up = onnx.version_converter.convert_version(onnx.load(str(digits_vit_model)), 21)
    path = tmp_path_factory.mktemp("vit21") / "vit21.onnx"
    onnx.save_model(up, path)
    return path


def _run(path: Path | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    m = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    sess = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the main graph (shape inference through the functions)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    out = {t.name: t.data_type for t in g.initializer}
    for v in [*g.input, *g.output, *g.value_info]:
        out[v.name] = v.type.tensor_type.elem_type
    return out


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _op_on_every_code(model: onnx.ModelProto, node: onnx.NodeProto, codes: np.ndarray) -> list:
    """The model's own op on every code: 8-bit codes -> Cast to its 4-bit type -> op -> Cast
    back (ORT's Python API takes no INT4 arrays), run in ORT and onnx.reference."""
    fn = next(f for f in model.functions if f.name == node.op_type)
    in_t = TensorProto.INT4 if codes.dtype == np.int8 else TensorProto.UINT4
    c8 = TensorProto.INT8 if codes.dtype == np.int8 else TensorProto.UINT8
    call = onnx.NodeProto()
    call.CopyFrom(node)
    call.input[:], call.output[:] = ["x4"], ["y4"]
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["x4"], to=in_t), call,
         helper.make_node("Cast", ["y4"], ["y"], to=c8)],
        "probe",
        [helper.make_tensor_value_info("x", c8, [None])],
        [helper.make_tensor_value_info("y", c8, [None])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=list(model.opset_import), functions=[fn])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    x = np.tile(codes, 17)
    return [_run(m, {"x": x}), reference_evaluator(m).run(None, {"x": x})[0]]


@pytest.mark.parametrize("target", ["int4-lut", "uint4-lut", "int3-lut"])
def test_vit_sites_stored_as_four_bit_tensors(vit21: Path, tmp_path: Path, target: str) -> None:
    from gelu_quant.models.digits_vit import digits_test_data

    four = tmp_path / "four.onnx"
    eight = tmp_path / "eight.onnx"
    res4 = convert_file(vit21, four, ConvertConfig(target, range=(-4.0, 4.0)))
    convert_file(vit21, eight, ConvertConfig(target, range=(-4.0, 4.0), code_container="int8"))
    m4, m8 = onnx.load(str(four)), onnx.load(str(eight))
    onnx.checker.check_model(m4, full_check=True)
    want_type = TensorProto.UINT4 if target.startswith("u") else TensorProto.INT4
    types = _types(m4)
    ops = [n for n in m4.graph.node if n.op_type.startswith("GeluLut_")]
    assert len(ops) == 2 and len(res4.manifest.converted) == 2
    bits = int(target[-5])
    for node, rec in zip(ops, res4.manifest.converted, strict=True):
        assert rec.code_container == FOUR[want_type]
        assert types[node.input[0]] == want_type and types[node.output[0]] == want_type
        (dq,) = [n for n in m4.graph.node if node.output[0] in n.input]
        assert dq.op_type == "DequantizeLinear" and types[dq.input[2]] == want_type
        spec = spec_from_json(rec.spec)
        assert spec.table.size == 2**bits  # type: ignore[attr-defined]
        attrs = {a.name: a for a in node.attribute}  # what a vendor compiler reads
        assert onnx.numpy_helper.to_array(attrs["table"].t).size == 2**bits
        assert attrs["in_bits"].i == bits and attrs["out_bits"].i == bits
        # every code through the op equals the table and float64 GELU quantized here
        iq, oq = spec.in_qparams, spec.out_qparams  # type: ignore[attr-defined]
        codes = iq.codes()
        x = (codes.astype(np.float64) - iq.zero_point) * np.float64(np.float32(iq.scale))
        want = np.clip(np.rint(_gelu_tanh(x) / np.float64(np.float32(oq.scale))) + oq.zero_point,
                       oq.qmin, oq.qmax).astype(codes.dtype)  # fmt: skip
        for got in _op_on_every_code(m4, node, codes):
            np.testing.assert_array_equal(got, np.tile(want, 17))
    # 4-bit codes need no Clip; narrower ones are clipped in the 8-bit container, then Cast
    kinds = [n.op_type for n in m4.graph.node]
    assert ("Clip" in kinds) == (bits < 4) and ("Cast" in kinds) == (bits < 4)
    assert all(t not in _types(m8).values() for t in FOUR)
    feeds, _ = digits_test_data()
    np.testing.assert_array_equal(_run(four, feeds), _run(eight, feeds))


ONE_GELU = """
    <ir_version: 10, opset_import: ["" : {opset}]>
    g (float[N] x) => (float[N] y) {{ y = Gelu(x) }}
"""


@pytest.mark.parametrize("target", ["int4-lut", "uint4-lut", "int2-lut", "uint3-lut"])
def test_every_float_input_like_the_8bit_container(target: str) -> None:
    """Dense inputs, infinities and NaN: the INT4 site gives what the 8-bit container gives
    (ORT and onnx.reference), with each body, also with the functions inlined (--expand)."""
    model = onnx.parser.parse_model(ONE_GELU.format(opset=21))
    x = np.concatenate([np.linspace(-9, 9, 40001), [np.inf, -np.inf, np.nan, 0.0, -0.0]])
    x = x.astype(np.float32)
    eight = convert_model(model, ConvertConfig(target, range=(-5.0, 6.0), code_container="int8"))
    want = _run(eight.model, {"x": x})
    bodies = ["auto", "formula"] if "4" in target else ["auto", "gather"]
    for expand, body in [(False, bodies[0]), (True, bodies[0]), (False, bodies[1])]:
        cfg = ConvertConfig(target, range=(-5.0, 6.0), expand=expand, lut_body=body)  # type: ignore[arg-type]
        res = convert_model(model, cfg)
        rec = res.manifest.converted[0]
        assert rec.code_container in FOUR.values()
        assert rec.body == {"auto": "gather-elements"}.get(body, body)
        np.testing.assert_array_equal(_run(res.model, {"x": x}), want)
        fin = np.isfinite(x)  # onnx.reference's QuantizeLinear casts infinities to int32
        ref = reference_evaluator(res.model).run(None, {"x": x[fin]})[0]
        np.testing.assert_array_equal(ref, want[fin])


def test_float16_site() -> None:
    model = onnx.parser.parse_model(ONE_GELU.format(opset=21).replace("float[N]", "float16[N]"))
    x = np.linspace(-8, 8, 4001).astype(np.float16)
    outs, kept = [], []
    for container in ("auto", "int8"):
        cfg = ConvertConfig("int4-lut", range=(-4.0, 4.0), code_container=container)  # type: ignore[arg-type]
        res = convert_model(model, cfg)
        outs.append(_run(res.model, {"x": x}))
        kept.append(res.manifest.converted[0].code_container)
    assert kept == ["int4", "int8"]
    assert outs[0].dtype == np.float16 and np.array_equal(outs[0], outs[1])


def test_below_opset_21_falls_back_or_refuses(digits_vit_model: Path, tmp_path: Path) -> None:
    res = convert_model(onnx.load(str(digits_vit_model)), ConvertConfig("int4-lut", range=(-4, 4)))
    assert [r.code_container for r in res.manifest.converted] == ["int8", "int8"]
    assert "Clip" in [n.op_type for n in res.model.graph.node]
    out = tmp_path / "x.onnx"
    with pytest.raises(BadInputError, match="opset 21"):
        convert_file(digits_vit_model, out, ConvertConfig("int4-lut", range=(-4, 4),
                                                         code_container="int4"))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(BadInputError, match="at most 4 bits"):
        ConvertConfig("int8-lut", range=(-4, 4), code_container="int4")
    with pytest.raises(BadInputError, match="code container"):
        ConvertConfig("int4-lut", code_container="int2")  # type: ignore[arg-type]


def test_cli_option_and_report(digits_vit_model: Path, vit21: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    args = ["convert", "--target", "int4-lut", "--range", "-4", "4", "-o", str(out)]
    r = CliRunner().invoke(main, [*args[:1], str(digits_vit_model), *args[1:],
                                  "--code-container", "int4"])  # fmt: skip
    assert r.exit_code == 2 and "opset 21" in r.output and not out.exists()
    r = CliRunner().invoke(main, [*args[:1], str(vit21), *args[1:]])
    assert r.exit_code == 0, r.output
    assert r.output.count("codes int4") == 2
    man = json.loads((tmp_path / "o.manifest.json").read_text())
    assert [s["code_container"] for s in man["sites"]] == ["int4", "int4"]
    assert "code_container" not in man["config"]  # auto, the default: config as before
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "2 gelu_quant op(s)" in r.output
    assert r.output.count("int4 -> int4") == 2
    r = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    ops = json.loads(r.output)["gelu_quant_ops"]
    assert [(o["input_type"], o["output_type"]) for o in ops] == [("int4", "int4")] * 2
    r = CliRunner().invoke(main, ["inspect", str(vit21), "--json"])
    assert "gelu_quant_ops" not in json.loads(r.output)  # not converted: the document as before


def test_export_of_an_int4_site(vit21: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.gq.onnx"
    convert_file(vit21, model, ConvertConfig("int4-lut", range=(-4.0, 4.0)))
    doc = export_folder(model, tmp_path / "device")
    site = doc["sites"][0]
    assert site["model_code_container"] == "int4" and site["in_ctype"] == "int8_t"
    header = (tmp_path / "device" / site["header"]).read_text()
    assert "ONNX INT4 tensors" in header and "static const int8_t" in header
    cc = find_c_compiler()
    if cc is None:
        return
    man = json.loads((tmp_path / "device" / "m.gq.manifest.json").read_text())
    spec = spec_from_json(man["sites"][0]["spec"])
    main_c = tmp_path / "main.c"
    main_c.write_text(
        f'#include <stdio.h>\n#include "{site["id"]}_kernel.h"\n'
        "int main(void) { int8_t in[16], out[16];\n"
        "  for (int i = 0; i < 16; ++i) in[i] = (int8_t)(i - 8);\n"
        f"  {site['function']}(in, out, 16);\n"
        '  for (int i = 0; i < 16; ++i) printf("%d\\n", (int)out[i]);\n  return 0; }\n'
    )
    exe = tmp_path / "main"
    dev = tmp_path / "device"
    subprocess.run(
        [cc, "-std=c99", "-O2", "-Wall", "-Werror", f"-I{dev / 'kernels'}",
         f"-I{dev / 'sites'}", str(main_c), str(dev / site["kernel_source"]), "-o", str(exe)],
        check=True,
    )  # fmt: skip
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    codes = np.arange(-8, 8, dtype=np.int8)
    np.testing.assert_array_equal(np.array(got, dtype=np.int64), spec.lookup(codes))
