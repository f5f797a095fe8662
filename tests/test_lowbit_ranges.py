"""Ranges chosen for a low-bit table's own code widths.

``entropy`` and ``mse`` depend on the table they choose for: the best range for 16 entries
clips harder than the best for 256. A ranges file stores the 8-bit choices and each site's exact
histogram; ``RangesFile.range_for(..., bits=, out_bits=)`` and ``convert`` for a low-bit target
choose again at the target's widths. Oracles: the table error computed here by brute force on
the raw values against float64 GELU (math.erf), and the methods run directly on statistics of
the raw values (the model's GELU input is its graph input, so those are the calibrated
values)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.methods import entropy_range, mse_range, select_range
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.graph.convert import ConvertConfig, convert_file, convert_model
from gelu_quant.lut.table import build_lut
from gelu_quant.lut.tails import cut_range

C = 16


def _gelu64(v: np.ndarray) -> np.ndarray:
    return np.array([t * 0.5 * math.erfc(-t / math.sqrt(2.0)) for t in v.ravel()]).reshape(v.shape)


def _data(n: int, seed: int) -> np.ndarray:
    """A bulk near N(-0.5, 1.5) with a sparse heavy tail up to ~20 (FFN pre-activations)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-0.5, 1.5, (n, C))
    tail = rng.random((n, C)) < 0.002
    x[tail] = rng.uniform(8.0, 20.0, int(tail.sum()))
    return x.astype(np.float32)


def _table_mse(x: np.ndarray, r: tuple[float, float], bits: int, out_bits: int) -> float:
    """Brute force: the (bits in, out_bits out) table on range r against float64 GELU."""
    spec = build_lut(in_range=r, in_bits=bits, out_bits=out_bits)
    v = x.astype(np.float64).ravel()
    return float(np.mean((spec.evaluate(v).astype(np.float64) - _gelu64(v)) ** 2))


@pytest.mark.parametrize(("bits", "out_bits"), [(4, 4), (6, 6), (6, 8), (3, 8)])
def test_mse_chooses_for_the_tables_widths(bits: int, out_bits: int) -> None:
    x = _data(4000, 0)
    st = TensorStats()
    st.update(x)
    r_own = mse_range(st, bits=bits, out_bits=out_bits)
    r_8 = mse_range(st)
    held_out = _data(2000, 1)
    assert _table_mse(held_out, r_own, bits, out_bits) < _table_mse(held_out, r_8, bits, out_bits)
    # 6-bit inputs with 8-bit entries: between 6/6 and 8/8, but its own range
    if (bits, out_bits) == (6, 8):
        assert r_own != mse_range(st, bits=6)


def test_entropy_requantizes_to_the_input_levels() -> None:
    x = _data(4000, 2)
    st = TensorStats()
    st.update(x)
    assert select_range(st, "entropy") == entropy_range(st, 255)
    assert select_range(st, "entropy", bits=8) == entropy_range(st, 255)
    assert select_range(st, "entropy", bits=4) == entropy_range(st, 15)
    assert select_range(st, "entropy", bits=6, out_bits=8) == entropy_range(st, 63)
    # minmax and percentile do not depend on the widths
    for m in ("minmax", "percentile"):
        assert select_range(st, m, bits=4) == select_range(st, m)  # type: ignore[arg-type]


def _model(path: Path) -> Path:
    g = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


def _calibrated(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    model = _model(tmp_path / "m.onnx")
    cal = _data(3000, 3)
    np.savez(tmp_path / "cal.npz", x=cal)
    calibrate_model(model, tmp_path / "cal.npz", tmp_path / "r.json")
    return model, tmp_path / "r.json", cal


def test_ranges_file_chooses_again_at_low_widths(tmp_path: Path) -> None:
    _, rpath, cal = _calibrated(tmp_path)
    rf = load_ranges(rpath)
    (site,) = rf.site_ids
    st = TensorStats()
    st.update(cal)  # the oracle statistics: the raw calibration values
    # 8-bit: the stored ranges, which are the methods on those statistics
    assert rf.range_for(site, "mse") == rf.range_for(site, "mse", bits=8, out_bits=8)
    assert rf.range_for(site, "mse") == mse_range(st)
    for bits, ob in ((4, 4), (6, 6), (6, 8), (2, 2)):
        assert rf.range_for(site, "mse", bits=bits, out_bits=ob) == mse_range(
            st, bits=bits, out_bits=ob
        )
        assert rf.range_for(site, "entropy", bits=bits, out_bits=ob) == entropy_range(
            st, 2**bits - 1
        )
        assert rf.range_for(site, "minmax", bits=bits) == rf.range_for(site, "minmax")
    # the chosen method (entropy by default) too; out_bits defaults to bits
    assert rf.method_of(site) == "entropy"
    assert rf.range_for(site, bits=4) == entropy_range(st, 15)
    assert rf.range_for(site, "mse", bits=4) == mse_range(st, bits=4, out_bits=4)


def test_files_without_the_site_histogram(tmp_path: Path) -> None:
    """An older file (no ``stats.hist``) chooses from the summed per-channel histograms; one
    with neither refuses the histogram methods at low widths and still gives the others."""
    _, rpath, _ = _calibrated(tmp_path)
    d = json.loads(rpath.read_text())
    for s in d["sites"]:
        del s["stats"]["hist"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = load_ranges(tmp_path / "old.json")
    (site,) = old.site_ids
    every = np.arange(C)
    assert old.range_for(site, "mse", bits=4) == old.group_range_for(site, every, "mse", bits=4)
    hi = old.range_for(site, "mse", bits=4)[1]
    assert old.range_for(site, "mse")[1] > hi  # it did choose for 4 bits: a harder clip
    for s in d["sites"]:
        del s["channels"]["hist"]
    (tmp_path / "older.json").write_text(json.dumps(d))
    older = load_ranges(tmp_path / "older.json")
    with pytest.raises(BadInputError, match="no histogram to choose the 'mse' range"):
        older.range_for(site, "mse", bits=4)
    assert older.range_for(site, "minmax", bits=4) == older.range_for(site, "minmax")
    assert older.range_for(site, "mse") == old.range_for(site, "mse")
    # convert skips the site, saying why (here the only one: nothing to convert), and
    # converts it with a method that does not depend on the widths
    model = onnx.load(str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="no histogram to choose the 'mse' range of 4-bit"):
        convert_model(model, ConvertConfig("int4-lut", method="mse"), ranges=older)
    res = convert_model(model, ConvertConfig("int4-lut", method="minmax"), ranges=older)
    assert len(res.manifest.converted) == 1


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0], np.float64)


@pytest.mark.parametrize(("target", "bits", "out_bits"), [("int4-lut", 4, 4), ("int6-lut", 6, 6)])
def test_convert_low_bit_target_with_its_own_ranges(
    tmp_path: Path, target: str, bits: int, out_bits: int
) -> None:
    """convert from a ranges file: the table's range is mse chosen at the target's widths
    (recorded in the manifest), and in ONNX Runtime on held-out data it is closer to float64
    GELU than the same target on the 8-bit mse range (what convert used before)."""
    model, rpath, _ = _calibrated(tmp_path)
    rf = load_ranges(rpath)
    (site,) = rf.site_ids
    res = convert_file(model, tmp_path / "own.onnx", ConvertConfig(target, method="mse"), ranges=rf)
    rec = res.manifest.converted[0]
    assert rec.range_source == f"ranges:mse at {bits}/{out_bits}-bit codes, tail cut"
    want = cut_range(*rf.range_for(site, "mse", bits=bits), in_bits=bits, out_bits=out_bits)
    assert rec.spec is not None
    q = build_lut(in_range=want, in_bits=bits, out_bits=out_bits).in_qparams
    assert rec.spec["in_qparams"]["scale"] == q.scale
    old = cut_range(*rf.range_for(site, "mse"), in_bits=bits, out_bits=out_bits)
    convert_file(model, tmp_path / "old.onnx", ConvertConfig(target, range=old))
    x = _data(2000, 4)  # held out
    ref = _gelu64(x.astype(np.float64))
    err_own = np.mean((_run(tmp_path / "own.onnx", x) - ref) ** 2)
    err_old = np.mean((_run(tmp_path / "old.onnx", x) - ref) ** 2)
    assert err_own < err_old


def test_hint_for_low_bit_tables_on_the_files_choice(tmp_path: Path) -> None:
    """Low-bit tables on the file's chosen method (entropy, chosen for int8 tables): the
    manifest notes that --method mse exists for them; none with --method, nor for int8."""
    model, rpath, _ = _calibrated(tmp_path)
    rf = load_ranges(rpath)
    m = onnx.load(str(model))
    notes = convert_model(m, ConvertConfig("int4-lut"), ranges=rf).manifest.notes
    assert any("chosen method 'entropy' for 4-bit tables; --method mse" in n for n in notes)
    for cfg in (ConvertConfig("int4-lut", method="mse"), ConvertConfig("int8-lut")):
        assert not any("--method mse" in n for n in convert_model(m, cfg, ranges=rf).manifest.notes)
