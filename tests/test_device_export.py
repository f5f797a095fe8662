"""``gelu-quant export``: the device folder. Oracle: each site's kernel, compiled from the folder
alone, run on every input code and compared with the spec's table (the one the model's op was
proven against), and the model in the folder run in ORT against the converted model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from gelu_quant.cli.main import main
from gelu_quant.device_export import export_folder
from gelu_quant.errors import BadInputError
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.lut.ckernels import find_c_compiler
from gelu_quant.lut.spec import spec_from_json

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"


def _converted(tmp_path: Path, target: str, fixture: str = "erf_torchscript") -> Path:
    src = tmp_path / "src.onnx"
    m = onnx.parser.parse_model((FIXTURES / f"{fixture}.onnxtxt").read_text())
    if target.startswith("int16-"):  # int16 QuantizeLinear: opset 21 (Erf, Div.. unchanged)
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 21
    onnx.save_model(m, src)
    dst = tmp_path / "m.gq.onnx"
    convert_file(src, dst, ConvertConfig(target, range=(-6.0, 6.0)))
    return dst


@pytest.mark.skipif(find_c_compiler() is None, reason="needs a C compiler")
@pytest.mark.parametrize(
    "target", ["int8-lut", "uint8-lut", "int4-lut", "int8-pwl16", "int8-interp32", "int16-pwl16"]
)
def test_folder_kernels_reproduce_the_tables(tmp_path: Path, target: str) -> None:
    model = _converted(tmp_path, target)
    out = tmp_path / "device"
    r = CliRunner().invoke(main, ["export", str(model), "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "export.json").read_text())
    man = json.loads((out / "m.gq.manifest.json").read_text())
    assert doc["model"]["source"]["fingerprint"] == man["source"]["fingerprint"]
    assert (out / "README.md").read_text().count("_gelu(in, out, n)") == len(doc["sites"])
    for site, rec in zip(doc["sites"], man["sites"], strict=True):
        spec = spec_from_json(rec["spec"])
        codes = spec.in_qparams.codes()
        main_c = tmp_path / f"{site['id']}_main.c"
        main_c.write_text(
            f'#include <stdio.h>\n#include "{site["id"]}_kernel.h"\n'
            f"int main(void) {{ {site['in_ctype']} in[{codes.size}]; "
            f"{site['out_ctype']} out[{codes.size}];\n"
            f"  for (int i = 0; i < {codes.size}; ++i) in[i] = ({site['in_ctype']})"
            f"({spec.in_qparams.qmin} + i);\n"
            f"  {site['function']}(in, out, {codes.size});\n"
            f'  for (int i = 0; i < {codes.size}; ++i) printf("%d\\n", (int)out[i]);\n'
            "  return 0; }\n"
        )
        exe = tmp_path / f"{site['id']}_main"
        cc = find_c_compiler()
        assert cc is not None
        subprocess.run(
            [cc, "-std=c99", "-O2", "-Wall", "-Werror", "-ffp-contract=off",
             f"-I{out / 'kernels'}", f"-I{out / 'sites'}", str(main_c),
             str(out / site["kernel_source"]), "-o", str(exe)],
            check=True,
        )  # fmt: skip
        got = np.array(subprocess.run([str(exe)], capture_output=True, text=True, check=True)
                       .stdout.split(), dtype=np.int64)  # fmt: skip
        np.testing.assert_array_equal(got, spec.lookup(codes).astype(np.int64))
    # the folder's model is the converted model
    rng = np.random.default_rng(0)
    sess = ort.InferenceSession(str(model))
    feeds = {
        i.name: rng.uniform(-6, 6, [d if isinstance(d, int) else 4 for d in i.shape]).astype(
            np.float32
        )
        for i in sess.get_inputs()
    }
    a = sess.run(None, feeds)[0]
    b = ort.InferenceSession(str(out / "m.gq.onnx")).run(None, feeds)[0]
    np.testing.assert_array_equal(a, b)


def test_refusals_leave_nothing(tmp_path: Path) -> None:
    model = _converted(tmp_path, "int8-lut")
    out = tmp_path / "device"
    out.mkdir()
    with pytest.raises(BadInputError, match="exists"):
        export_folder(model, out)
    with pytest.raises(BadInputError, match="manifest"):
        export_folder(model, tmp_path / "d2", manifest=tmp_path / "missing.json")
    assert not (tmp_path / "d2").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_site_without_kernel_is_said(tmp_path: Path) -> None:
    model = _converted(tmp_path, "fp32-tanh-formula")
    doc = export_folder(model, tmp_path / "device")
    (site,) = doc["sites"]
    assert site["kernel"] is None and "no C kernel" in site["note"]


@pytest.mark.skipif(find_c_compiler() is None, reason="needs a C compiler")
@pytest.mark.parametrize("target", ["int8-lut", "int6-lut-int8out"])
def test_grouped_site_kernel_from_the_folder(tmp_path: Path, target: str) -> None:
    """A `convert --groups 4` site gets a kernel; compiled from the folder alone it gives the
    spec's table of every channel's group on every code of every channel (low-bit codes: the
    model's Clip to their range, then the entry)."""
    from onnx import TensorProto, helper

    from gelu_quant.calib.calibration import calibrate_model
    from gelu_quant.calib.ranges_file import load_ranges
    from gelu_quant.lut.grouped import GroupedLutSpec

    channels = 24
    g = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    src = tmp_path / "src.onnx"
    onnx.save(m, str(src))
    x = np.random.default_rng(0).standard_normal((512, channels)).astype(np.float32)
    x[:, [2, 11, 19]] *= 7.0  # outlier channels: groups of their own
    np.savez(tmp_path / "cal.npz", x=x)
    calibrate_model(src, tmp_path / "cal.npz", tmp_path / "r.json")
    model = tmp_path / "m.gq.onnx"
    convert_file(
        src, model, ConvertConfig(target, groups=4), ranges=load_ranges(tmp_path / "r.json")
    )
    out = tmp_path / "device"
    doc = export_folder(model, out)
    (site,) = doc["sites"]
    assert site["spec"] == "grouped_lut" and site["kernel_source"] == "kernels/gelu_lut_grouped.c"
    assert (site["channels"], site["groups"]) == (channels, 4)
    assert "none:" not in (out / "README.md").read_text()
    assert "`n` = rows × channels" in (out / "README.md").read_text()
    man = json.loads((out / "m.gq.manifest.json").read_text())
    spec = spec_from_json(man["sites"][0]["spec"])
    assert isinstance(spec, GroupedLutSpec)
    ident = site["function"][: -len("_gelu")]
    # row r, channel c: code (r + 37 c) mod 256 - 128: every code in every channel
    main_c = tmp_path / "grouped_main.c"
    main_c.write_text(
        f'#include <stdio.h>\n#include "{ident}_kernel.h"\n'
        f"static int8_t in[256 * {ident.upper()}_CHANNELS], out[256 * {ident.upper()}_CHANNELS];\n"
        "int main(void) { size_t r, c, C = " + ident.upper() + "_CHANNELS;\n"
        "  for (r = 0; r < 256; r++) for (c = 0; c < C; c++)\n"
        "    in[r * C + c] = (int8_t)((int)((r + 37 * c) % 256) - 128);\n"
        f"  {site['function']}(in, out, 256 * C);\n"
        '  for (r = 0; r < 256 * C; r++) printf("%d\\n", (int)out[r]);\n'
        "  return 0; }\n"
    )
    exe = tmp_path / "grouped_main"
    cc = find_c_compiler()
    assert cc is not None
    subprocess.run(
        [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
         f"-I{out / 'kernels'}", f"-I{out / 'sites'}", str(main_c),
         str(out / site["kernel_source"]), "-o", str(exe)],
        check=True,
    )  # fmt: skip
    got = np.array(subprocess.run([str(exe)], capture_output=True, text=True, check=True)
                   .stdout.split(), dtype=np.int64).reshape(256, channels)  # fmt: skip
    codes = ((np.arange(256)[:, None] + 37 * np.arange(channels)[None, :]) % 256 - 128).astype(
        np.int8
    )
    qp = spec.groups[0].in_qparams
    clipped = np.clip(codes.astype(np.int64), qp.qmin, qp.qmax)
    want = np.stack(
        [
            spec.groups[int(spec.channel_group[c])].table[clipped[:, c] - qp.qmin]
            for c in range(channels)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(got, want.astype(np.int64))
    inside = (codes >= qp.qmin) & (codes <= qp.qmax)
    assert inside.all() == (target == "int8-lut")
    lookup = spec.lookup(np.where(inside, codes, qp.qmin).astype(np.int8)).astype(np.int64)
    np.testing.assert_array_equal(got[inside], lookup[inside])
