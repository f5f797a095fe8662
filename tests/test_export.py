"""C-header export compiled by a real C compiler, and the JSON document."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gelu_quant.fileio import write_text_atomic
from gelu_quant.lut.export import c_header, spec_json_text
from gelu_quant.lut.interp import build_interp_lut
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.lut.table import build_lut

needs_cc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")


def _compile_and_print(tmp_path: Path, header: str, array: str, ctype: str, fmt: str) -> list[str]:
    (tmp_path / "gelu_table.h").write_text(header)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "gelu_table.h"\n'
        f"int main(void) {{ for (unsigned i = 0; i < sizeof({array}) / sizeof({array}[0]); i++)"
        f' printf("{fmt}\\n", ({ctype}){array}[i]); return 0; }}\n'
    )
    exe = tmp_path / "main"
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(tmp_path / "main.c")],
        check=True,
        capture_output=True,
    )
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()


@needs_cc
@pytest.mark.parametrize("out_dt", ["int8", "uint8", "int16"])
def test_c_header_integer_table_compiles_and_holds_the_table(tmp_path: Path, out_dt: str) -> None:
    spec = build_lut(in_range=(-6, 9), out_dtype=out_dt)  # type: ignore[arg-type]
    vals = _compile_and_print(tmp_path, c_header(spec, "gelu"), "gelu_table", "int", "%d")
    assert [int(v) for v in vals] == spec.table.tolist()


@needs_cc
def test_c_header_float16_bits_and_float32(tmp_path: Path) -> None:
    spec = build_lut(in_range=(-6, 9), out_dtype="float16")
    vals = _compile_and_print(tmp_path, c_header(spec), "gelu_table", "unsigned", "%u")
    assert (
        np.array([int(v) for v in vals], np.uint16).view(np.float16).tolist() == spec.table.tolist()
    )
    spec32 = build_lut(in_range=(-6, 9), out_dtype="float32")
    vals = _compile_and_print(tmp_path, c_header(spec32), "gelu_table", "double", "%.9g")
    assert np.array([float(v) for v in vals], np.float32).tolist() == spec32.table.tolist()


@needs_cc
def test_c_header_interp_knots_and_macros(tmp_path: Path) -> None:
    spec = build_interp_lut(segments=16, in_range=(-8, 8))
    header = c_header(spec, "ffn0")
    assert "#define FFN0_IN_QPARAMS_ZERO_POINT" in header
    vals = _compile_and_print(tmp_path, header, "ffn0_knots", "int", "%d")
    assert [int(v) for v in vals] == spec.knots.tolist()


def test_json_text_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    spec = build_lut(in_range=(-3, 3), out_dtype="float16", form="tanh")
    text = spec_json_text(spec)
    assert text == spec_json_text(build_lut(in_range=(-3, 3), out_dtype="float16", form="tanh"))
    p = write_text_atomic(tmp_path / "s.json", text)
    assert spec_from_json(json.loads(p.read_text())) == spec
    assert [f.name for f in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind
