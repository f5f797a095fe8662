"""Low-bit tables (2–7-bit codes in an 8-bit container): qparams, tables, conversion, C headers.
Oracles: the code ranges written out, float64 GELU quantized in the test, ORT and onnx.reference
runs of the converted model against the spec's numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from gelu_quant.errors import SpecError
from gelu_quant.graph.convert import ConvertConfig, convert_model
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.graph.ops.op_runners import reference_evaluator
from gelu_quant.graph.targets import TARGETS
from gelu_quant.lut.export import c_header
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.lut.table import build_lut
from gelu_quant.qparams import QParams, qlimits


@pytest.mark.parametrize("bits", range(2, 9))
def test_code_ranges(bits: int) -> None:
    assert qlimits("int8", bits) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert qlimits("uint8", bits) == (0, 2**bits - 1)
    qp = QParams.from_range(-3.0, 5.0, "int8", bits)
    assert qp.codes().size == 2**bits
    x = np.array([-1e9, -3.0, 0.0, 5.0, 1e9, np.nan], dtype=np.float32)
    q = qp.quantize(x)
    assert q.dtype == np.int8
    assert q[0] == qp.qmin and q[-2] == qp.qmax and q[-1] == qp.zero_point
    # the grid covers the range: both ends within half a step
    lo, hi = qp.real_range
    assert lo <= -3.0 + qp.scale / 2 and hi >= 5.0 - qp.scale / 2


def test_bad_bits_and_full_width_spelling() -> None:
    with pytest.raises(SpecError, match="bits"):
        qlimits("int8", 9)
    with pytest.raises(SpecError, match="bits"):
        QParams(0.1, 0, "int8", code_bits=1)
    with pytest.raises(SpecError, match="zero point"):
        QParams(0.1, 9, "int8", code_bits=4)
    assert QParams(0.1, 0, "int8", code_bits=8) == QParams(0.1, 0, "int8")
    assert QParams.from_json(QParams(0.1, 3, "int8", 4).to_json()) == QParams(0.1, 3, "int8", 4)
    assert "bits" not in QParams(0.1, 3, "int8").to_json()  # full width: JSON as before


@pytest.mark.parametrize("bits", [2, 4, 6])
def test_table_entries(bits: int) -> None:
    spec = build_lut(
        in_range=(-7.0, 9.0), in_dtype="uint8", out_dtype="uint8", in_bits=bits, out_bits=bits
    )
    iq, oq = spec.in_qparams, spec.out_qparams
    assert oq is not None and spec.table.size == 2**bits
    x = (np.arange(0, 2**bits) - iq.zero_point) * np.float64(iq.scale)
    g = x * 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])
    want = np.clip(np.rint(g / np.float64(oq.scale)) + oq.zero_point, 0, 2**bits - 1)
    assert np.array_equal(spec.table.astype(np.int64), want.astype(np.int64))
    assert spec_from_json(spec.to_json()) == spec


def test_low_bit_targets_listed() -> None:
    for b in range(2, 8):
        assert TARGETS[f"int{b}-lut"].bits == b
        assert TARGETS[f"uint{b}-lut"].bits == b
    assert TARGETS["int8-lut"].bits == 8
    for b in range(2, 8):  # small tables of int8 / uint8 entries
        for sign in ("int", "uint"):
            t = TARGETS[f"{sign}{b}-lut-{sign}8out"]
            assert (t.bits, t.entry_bits, t.in_dtype, t.out_dtype) == (b, 8, f"{sign}8", f"{sign}8")


MODELS = {
    "gelu-op": """
        <ir_version: 10, opset_import: ["" : 20]>
        g (float[N] x) => (float[N] y) { y = Gelu(x) }
    """,
    "erf-pattern": """
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[N] x) => (float[N] y) {
            r2 = Constant<value = float {1.4142135}>()
            one = Constant<value = float {1.0}>()
            half = Constant<value = float {0.5}>()
            a = Div(x, r2)
            e = Erf(a)
            b = Add(e, one)
            c = Mul(x, b)
            y = Mul(c, half)
        }
    """,
}


@pytest.mark.parametrize(
    "target",
    ["int4-lut", "uint4-lut", "int6-lut", "int2-lut", "int6-lut-int8out", "uint3-lut-uint8out"],
)
@pytest.mark.parametrize("spelling", list(MODELS))
def test_convert_low_bit_target(target: str, spelling: str) -> None:
    import onnxruntime as ort

    model = onnx.parser.parse_model(MODELS[spelling])
    assert len(find_gelu_sites(model)) == 1
    res = convert_model(model, ConvertConfig(target, range=(-5.0, 6.0)))
    spec = spec_from_json(res.manifest.converted[0].spec)
    bits, out_bits = TARGETS[target].bits, TARGETS[target].entry_bits
    assert spec.table.size == 2**bits  # type: ignore[attr-defined]
    oq = spec.out_qparams  # type: ignore[attr-defined]
    lo_code, hi_code = (-(2 ** (out_bits - 1)), 2 ** (out_bits - 1) - 1)
    if TARGETS[target].out_dtype == "uint8":
        lo_code, hi_code = 0, 2**out_bits - 1
    assert (oq.qmin, oq.qmax) == (lo_code, hi_code)
    # the output codes use their whole width: the table's top entry is the top code
    assert int(spec.table.max()) == hi_code  # type: ignore[attr-defined]
    assert "Clip" in [nd.op_type for nd in res.model.graph.node]
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-8, 9, 3000), np.linspace(-6, 7, 2001)]).astype(np.float32)
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = spec.evaluate(x)
    assert np.array_equal(sess.run(None, {"x": x})[0], want)
    if spelling == "gelu-op":  # onnx.reference has no QuantizeLinear for opsets below 19
        assert np.array_equal(reference_evaluator(res.model).run(None, {"x": x})[0], want)


def test_c_header_of_a_low_bit_table() -> None:
    spec = build_lut(in_range=(-4.0, 4.0), in_bits=4, out_bits=4)
    h = c_header(spec, "g4")
    assert "#define G4_IN_QPARAMS_BITS 4" in h
    assert "#define G4_IN_QPARAMS_QMIN (-8)" in h and "#define G4_IN_QPARAMS_QMAX 7" in h
    assert "#define G4_OUT_QPARAMS_BITS 4" in h
    assert "static const int8_t g4_table[16]" in h
    mixed = c_header(build_lut(in_range=(-4.0, 4.0), in_bits=6, out_bits=8), "g6")
    assert "#define G6_IN_QPARAMS_BITS 6" in mixed and "G6_OUT_QPARAMS_BITS" not in mixed
    assert "static const int8_t g6_table[64]" in mixed
    full = c_header(build_lut(in_range=(-4.0, 4.0)), "g8")
    assert "BITS" not in full and "g8_table[256]" in full


QDQ_CLIPPED = """
    <ir_version: 10, opset_import: ["" : 20]>
    g (float[N] x) => (float[N] y) {
        s = Constant<value = float {0.4}>()
        z = Constant<value = int8 {-1}>()
        lo = Constant<value = int8 {-8}>()
        hi = Constant<value = int8 {7}>()
        so = Constant<value = float {0.3}>()
        zo = Constant<value = int8 {-7}>()
        q = QuantizeLinear(x, s, z)
        qc = Clip(q, lo, hi)
        d = DequantizeLinear(qc, s, z)
        g1 = Gelu(d)
        q2 = QuantizeLinear(g1, so, zo)
        q2c = Clip(q2, lo, hi)
        y = DequantizeLinear(q2c, so, zo)
    }
"""


def test_qdq_site_with_low_bit_clips_collapses_to_a_low_bit_table() -> None:
    import onnxruntime as ort

    model = onnx.parser.parse_model(QDQ_CLIPPED)
    (site,) = find_gelu_sites(model)
    assert site.qdq_in is not None and site.qdq_out is not None
    assert (site.qdq_in.bits, site.qdq_out.bits) == (4, 4)
    assert "bits" in site.to_json()["qdq_in"]
    res = convert_model(model, ConvertConfig("int8-lut"))
    spec = spec_from_json(res.manifest.converted[0].spec)
    want_spec = build_lut(
        in_qparams=QParams(0.4, -1, "int8", 4), out_qparams=QParams(0.3, -7, "int8", 4)
    )
    assert spec == want_spec and want_spec.table.size == 16
    x = np.linspace(-6, 6, 4001, dtype=np.float32)
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(None, {"x": x})[0], want_spec.evaluate(x))
    full = Path(__file__).parent / "fixtures" / "spellings" / "qdq_gelu.onnxtxt"
    (full_site,) = find_gelu_sites(onnx.parser.parse_model(full.read_text()))
    assert full_site.qdq_in is not None and full_site.qdq_in.bits is None
    assert "bits" not in full_site.to_json()["qdq_in"]  # inspect --json as before


def test_mse_range_scored_at_low_bits() -> None:
    """On a heavy-tailed sample the 4-bit MSE range clips harder than the int8 one, and its
    4-bit table's output error (computed here, by brute force) beats minmax's."""
    from gelu_quant.calib.methods import minmax_range, mse_range
    from gelu_quant.calib.stats import TensorStats

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1.0, 2.0, 200_000), rng.uniform(10, 20, 200)])
    st = TensorStats()
    st.update(x)
    r8, r4 = mse_range(st), mse_range(st, bits=4)
    assert r4[1] < r8[1]

    def err(r: tuple[float, float]) -> float:
        spec = build_lut(in_range=r, in_bits=4, out_bits=4)
        v = x[:20000]
        g = v * 0.5 * np.array([math.erfc(-t / math.sqrt(2.0)) for t in v])
        return float(np.mean((spec.evaluate(x[:20000]).astype(np.float64) - g) ** 2))

    assert err(r4) < err(minmax_range(st))
