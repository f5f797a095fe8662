"""``gelu-quant calibrate`` / ``merge-stats`` and the ranges file, on a hand-made model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from _calib_models import batches, oracle_preactivations, save, two_gelu_model
from click.testing import CliRunner

from gelu_quant.calib.methods import METHODS
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.cli.main import main
from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.fingerprint import model_fingerprint


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    model, _ = two_gelu_model()
    save(model, tmp_path / "m.onnx")
    data = batches(6)
    x = np.concatenate(data)
    np.savez(tmp_path / "all.npz", x=x)
    np.savez(tmp_path / "a.npz", x=x[:17])
    np.savez(tmp_path / "b.npz", x=x[17:])
    return tmp_path, data


def test_calibrate_writes_every_method_and_marks_the_chosen(setup: tuple[Path, list]) -> None:
    d, data = setup
    code, _, err = _run(
        "calibrate",
        str(d / "m.onnx"),
        "--data",
        str(d / "all.npz"),
        "-o",
        str(d / "r.json"),
        "--method",
        "percentile",
        "--percentile",
        "99.9",
        "--batch-size",
        "8",
        "--threads",
        "1",
    )
    assert code == 0, err
    r = load_ranges(d / "r.json")
    raw = json.loads((d / "r.json").read_text())
    assert raw["schema"] == "gelu-quant/ranges" and raw["schema_version"] == 1
    assert raw["model"]["fingerprint"] == model_fingerprint(d / "m.onnx")
    n = sum(b.shape[0] for b in data)
    assert raw["data"]["samples"] == n and raw["data"]["batches"] == -(-n // 8)
    assert r.site_ids == ["gelu0", "gelu1"]
    p0, p1 = oracle_preactivations(data)
    for site, p in zip(r.sites, (p0, p1), strict=True):
        assert site["chosen"] == "percentile" and set(site["ranges"]) == set(METHODS)
        assert site["stats"]["min"] == float(p.min()) and site["stats"]["count"] == p.size
        assert r.range_for(site["id"], "minmax") == (float(p.min()), float(p.max()))
        assert r.range_for(site["id"]) == tuple(site["ranges"]["percentile"]["input"])
        lo, hi = r.output_range_for(site["id"])
        assert lo >= -0.17 and hi <= float(p.max())
    with pytest.raises(BadInputError, match="no range for site"):
        r.range_for("gelu9")


def test_merged_shards_equal_one_pass(setup: tuple[Path, list]) -> None:
    d, _ = setup
    m = str(d / "m.onnx")
    common = ["--batch-size", "5", "--threads", "1", "--method", "entropy"]
    assert (
        _run(
            "calibrate",
            m,
            "--data",
            str(d / "all.npz"),
            "-o",
            str(d / "one.json"),
            "--save-stats",
            str(d / "one.npz"),
            *common,
        )[0]
        == 0
    )
    assert (
        _run(
            "calibrate",
            m,
            "--data",
            str(d / "a.npz"),
            "-o",
            str(d / "ra.json"),
            "--save-stats",
            str(d / "sa.npz"),
            *common,
        )[0]
        == 0
    )
    assert (
        _run(
            "calibrate",
            m,
            "--data",
            str(d / "b.npz"),
            "-o",
            str(d / "rb.json"),
            "--save-stats",
            str(d / "sb.json"),
            *common,
        )[0]
        == 0
    )
    code, _, err = _run(
        "merge-stats",
        str(d / "sb.json"),
        str(d / "sa.npz"),
        "-o",
        str(d / "merged.json"),
        "--method",
        "entropy",
    )
    assert code == 0, err
    one = json.loads((d / "one.json").read_text())
    merged = json.loads((d / "merged.json").read_text())
    assert merged["sites"] == one["sites"]
    assert merged["data"]["samples"] == one["data"]["samples"]
    assert [s["source"] for s in merged["data"]["sources"]] == [str(d / "b.npz"), str(d / "a.npz")]


def test_output_is_deterministic(setup: tuple[Path, list]) -> None:
    d, _ = setup
    args = [str(d / "m.onnx"), "--data", str(d / "all.npz"), "--threads", "1", "-q"]
    assert _run("calibrate", *args, "-o", str(d / "1.json"))[0] == 0
    assert _run("calibrate", *args, "-o", str(d / "2.json"))[0] == 0
    one, two = (d / "1.json").read_text(), (d / "2.json").read_text()
    # the row sample beside each file: the same bytes; the ranges files differ only in its name
    assert (d / "1.sample.npz").read_bytes() == (d / "2.sample.npz").read_bytes()
    assert one.replace('"1.sample.npz"', '"2.sample.npz"') == two


def test_check_model_refuses_another_model(setup: tuple[Path, list], tmp_path: Path) -> None:
    d, _ = setup
    assert (
        _run("calibrate", str(d / "m.onnx"), "--data", str(d / "all.npz"), "-o", str(d / "r.json"))[
            0
        ]
        == 0
    )
    r = load_ranges(d / "r.json")
    r.check_model(d / "m.onnx")
    other, _ = two_gelu_model(weight_scale=2.0)
    save(other, d / "other.onnx")
    with pytest.raises(ModelError, match="different model"):
        r.check_model(d / "other.onnx")
    r.check_model(d / "other.onnx", force=True)
    # re-saving with weights in external data keeps the fingerprint
    model = onnx.load(d / "m.onnx")
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(
        model,
        ext / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    assert (ext / "w.bin").exists()
    r.check_model(ext / "m.onnx")


def test_calibrate_model_with_external_data(setup: tuple[Path, list], tmp_path: Path) -> None:
    d, _ = setup
    model = onnx.load(d / "m.onnx")
    ext = tmp_path / "ext2"
    ext.mkdir()
    onnx.save(model, ext / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    code, _, err = _run(
        "calibrate",
        str(ext / "m.onnx"),
        "--data",
        str(d / "all.npz"),
        "-o",
        str(d / "e.json"),
        "--threads",
        "1",
    )
    assert code == 0, err
    assert (
        _run(
            "calibrate",
            str(d / "m.onnx"),
            "--data",
            str(d / "all.npz"),
            "-o",
            str(d / "n.json"),
            "--threads",
            "1",
        )[0]
        == 0
    )
    assert (
        json.loads((d / "e.json").read_text())["sites"]
        == json.loads((d / "n.json").read_text())["sites"]
    )
    assert sorted(p.name for p in ext.iterdir()) == ["m.onnx", "w.bin"]  # no probe left behind


def test_bad_inputs_give_one_line_and_exit_2(setup: tuple[Path, list]) -> None:
    d, _ = setup
    np.savez(d / "wrong.npz", y=np.zeros((3, 6), np.float32))
    code, _, err = _run(
        "calibrate", str(d / "m.onnx"), "--data", str(d / "wrong.npz"), "-o", str(d / "r.json")
    )
    assert code == 2
    assert err.count("\n") == 1 and "missing model input(s) x" in err and "float32[batch, 6]" in err
    code, _, err = _run(
        "calibrate", str(d / "m.onnx"), "--data", str(d / "all.npz"), "-o", str(d / "all.npz")
    )
    assert code == 2 and "refusing to overwrite" in err
    code, _, err = _run(
        "calibrate", str(d / "nope.onnx"), "--data", str(d / "all.npz"), "-o", str(d / "r.json")
    )
    assert code == 2 and "no such model" in err


def test_merge_refuses_shards_of_different_models(setup: tuple[Path, list]) -> None:
    d, _ = setup
    other, _ = two_gelu_model(weight_scale=3.0)
    save(other, d / "other.onnx")
    assert (
        _run(
            "calibrate",
            str(d / "m.onnx"),
            "--data",
            str(d / "a.npz"),
            "-o",
            str(d / "ra.json"),
            "--save-stats",
            str(d / "sa.npz"),
        )[0]
        == 0
    )
    assert (
        _run(
            "calibrate",
            str(d / "other.onnx"),
            "--data",
            str(d / "b.npz"),
            "-o",
            str(d / "rb.json"),
            "--save-stats",
            str(d / "sb.npz"),
        )[0]
        == 0
    )
    code, _, err = _run(
        "merge-stats", str(d / "sa.npz"), str(d / "sb.npz"), "-o", str(d / "m.json")
    )
    assert code == 2 and "different model" in err
    code, _, err = _run("merge-stats", str(d / "ra.json"), "-o", str(d / "m.json"))
    assert code == 2 and "statistics file" in err
