"""``gelu-quant sweep`` and ``convert --target auto`` on the digits ViT (real images, tanh GELU).

Calibration uses the training split's first part, auto's measurements its last part (held out
from calibration), the sweep the test split (never calibrated on). The oracles are ORT runs
of the written models scored here with numpy, and the specs of single-target conversions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from gelu_quant.calib.calibration import calibrate_model
from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.cli.main import main
from gelu_quant.errors import BadInputError
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.graph.targets import SiteChoice
from gelu_quant.models.digits_vit import digits_test_data, digits_train_data, digits_vit_path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sweep")
    x, _ = digits_train_data()
    np.savez(d / "fit.npz", pixels=x[:-128])
    np.savez(d / "held.npz", pixels=x[-128:])
    feeds, labels = digits_test_data()
    np.savez(d / "eval.npz", pixels=feeds["pixels"])
    np.save(d / "labels.npy", labels)
    calibrate_model(digits_vit_path(), d / "fit.npz", d / "ranges.json", threads=1)
    return {"dir": d, "ranges": d / "ranges.json"}


def _logits(model: Path, pixels: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(["logits"], {"pixels": pixels})[0], np.float64)


def _one_minus_cos(ref: np.ndarray, got: np.ndarray) -> float:
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    return 1.0 - float(cos.mean())


def test_sweep_rows_are_the_measured_models(setup: dict[str, Path]) -> None:
    d = setup["dir"]
    out = d / "sweep-out"
    r = CliRunner().invoke(
        main,
        [
            "sweep", str(digits_vit_path()), "--ranges", str(setup["ranges"]),
            "--data", str(d / "eval.npz"), "--labels", str(d / "labels.npy"),
            "--targets", "int8-lut,fp16-poly", "--methods", "minmax,entropy",
            "--groups", "1,2", "-o", str(out), "--keep-models", "--latency-rounds", "2", "-q",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "sweep.json").read_text())
    rows = {row["label"]: row for row in doc["rows"]}
    assert set(rows) == {
        "int8-lut minmax", "int8-lut minmax ×2", "int8-lut entropy", "int8-lut entropy ×2",
        "fp16-poly",
    }  # fmt: skip
    assert all(row["failed"] is None for row in rows.values())
    # the error and accuracy drop of a row are those of the model it converted, run here
    feeds, labels = digits_test_data()
    ref = _logits(digits_vit_path(), feeds["pixels"])
    kept = sorted((out / "models").glob("*.onnx"))
    assert len(kept) == 5
    for path in kept:
        label = next(lb for lb in rows if path.name.endswith(_slug(lb) + ".onnx"))
        got = _logits(path, feeds["pixels"])
        row = rows[label]
        assert row["error"] == pytest.approx(_one_minus_cos(ref, got), abs=1e-9)
        drop = 100.0 * (np.mean(ref.argmax(1) == labels) - np.mean(got.argmax(1) == labels))
        assert row["accuracy_drop"] == pytest.approx(drop, abs=1e-9)
        assert row["latency_ratio"] > 0
    # bytes: 256 int8 entries per site; two tables + a uint8 channel map + 4 float/int qparam
    # arrays of two entries each (4 bytes) for K = 2
    ch = load_ranges(setup["ranges"]).channel_ranges_for("gelu0")
    assert ch is not None
    c = ch[0].size  # the FFN width: channels of the GELU's last axis
    assert rows["int8-lut minmax"]["table_bytes"] == 2 * 256
    assert rows["int8-lut minmax ×2"]["table_bytes"] == 2 * (2 * 256 + c + 4 * 2 * 4)

    # Pareto: a row is on the front exactly when no other row is <= in bytes, error and
    # latency and < in one of them
    def cost(r: dict) -> tuple[float, float, float]:  # type: ignore[type-arg]
        return (r["table_bytes"], r["error"], r["latency_ratio"])

    for row in rows.values():
        dominated = any(
            o is not row
            and all(a <= b for a, b in zip(cost(o), cost(row), strict=True))
            and cost(o) != cost(row)
            for o in rows.values()
        )
        assert row["pareto"] is (not dominated)
    assert (out / "sweep.csv").read_text().count("\n") == 6
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "int8-lut minmax ×2" in (out / "sweep.md").read_text()


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def test_sweep_refusals(setup: dict[str, Path]) -> None:
    d = setup["dir"]
    base = ["sweep", str(digits_vit_path()), "--ranges", str(setup["ranges"]), "--data",
            str(d / "eval.npz"), "-o", str(d / "x")]  # fmt: skip
    from gelu_quant.sweep import sweep_points

    # low-bit tables have no grouped form: one point each, never a silent 8-bit grouped table
    assert [p.groups for p in sweep_points(["int6-lut", "int8-lut"], ["minmax"], [1, 8])] == [
        1, 1, 8,
    ]  # fmt: skip
    r = CliRunner().invoke(main, [*base, "--targets", "int9-lut"])
    assert r.exit_code == 2 and "unknown target" in r.output
    r = CliRunner().invoke(main, [*base, "--methods", "magic"])
    assert r.exit_code == 2 and "has no magic ranges" in r.output
    r = CliRunner().invoke(main, [*base, "--score-output", "probs"])
    assert r.exit_code == 2 and "no output named probs; the model has logits" in r.output


def test_site_choices_convert_each_site_as_its_own_target(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    ranges = load_ranges(setup["ranges"])
    model = digits_vit_path()
    choices = (SiteChoice("gelu0", "int8-lut-fp16out"), SiteChoice("gelu1", "int8-lut", None, 2))
    res = convert_file(
        model, tmp_path / "mix.onnx", ConvertConfig("int8-lut", site_choices=choices),
        ranges=ranges,
    )  # fmt: skip
    for c in choices:
        alone = convert_file(
            model, tmp_path / f"{c.site}.onnx",
            ConvertConfig(c.target, groups=c.groups, sites=(c.site,)), ranges=ranges,
        )  # fmt: skip
        rec = res.manifest.site(c.site)
        assert rec.target == c.target
        assert rec.spec == alone.manifest.site(c.site).spec
    with pytest.raises(BadInputError, match="no site named gelu7"):
        convert_file(
            model, tmp_path / "bad.onnx",
            ConvertConfig("int8-lut", site_choices=(SiteChoice("gelu7", "int8-lut"),)),
            ranges=ranges,
        )  # fmt: skip
    assert not (tmp_path / "bad.onnx").exists()
    man = json.loads((tmp_path / "mix.manifest.json").read_text())
    assert [s["target"] for s in man["sites"]] == ["int8-lut-fp16out", "int8-lut"]
    feeds, _ = digits_test_data()
    got = _logits(tmp_path / "mix.onnx", feeds["pixels"])
    assert _one_minus_cos(_logits(model, feeds["pixels"]), got) < 1e-2


def test_auto_meets_the_budget_it_measures(setup: dict[str, Path], tmp_path: Path) -> None:
    d = setup["dir"]
    model = digits_vit_path()
    held = np.load(d / "held.npz")["pixels"]
    ref = _logits(model, held)
    # the all-int8-lut error on the held-out part; ask for 60 % of it
    convert_file(model, tmp_path / "k1.onnx", ConvertConfig("int8-lut"),
                 ranges=load_ranges(setup["ranges"]))  # fmt: skip
    e1 = _one_minus_cos(ref, _logits(tmp_path / "k1.onnx", held))
    budget = e1 * 0.6
    out = tmp_path / "auto.onnx"
    r = CliRunner().invoke(
        main,
        ["convert", str(model), "--ranges", str(setup["ranges"]), "--target", "auto",
         "--budget", f"{budget:.6e}", "--data", str(d / "held.npz"), "-o", str(out), "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "auto.manifest.json").read_text())
    auto = man["auto"]
    measured = _one_minus_cos(ref, _logits(out, held))
    assert auto["error"] == pytest.approx(measured, abs=1e-9)
    assert measured <= float(f"{budget:.6e}")
    assert [s["target"] for s in man["sites"]] == [
        auto["sites"][s]["choice"].split(":")[0] for s in ("gelu0", "gelu1")
    ]
    assert any(auto["sites"][s]["choice"] != "int8-lut" for s in ("gelu0", "gelu1"))
    # a generous budget: every site keeps the cheapest table
    r = CliRunner().invoke(
        main,
        ["convert", str(model), "--ranges", str(setup["ranges"]), "--target", "auto",
         "--budget", "0.5", "--data", str(d / "held.npz"), "-o", str(tmp_path / "a2.onnx"),
         "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    man2 = json.loads((tmp_path / "a2.manifest.json").read_text())
    assert [s["target"] for s in man2["sites"]] == ["int8-lut", "int8-lut"]


def test_auto_refusals(setup: dict[str, Path], tmp_path: Path) -> None:
    d = setup["dir"]
    model = str(digits_vit_path())
    out = tmp_path / "never.onnx"
    base = ["convert", model, "--ranges", str(setup["ranges"]), "-o", str(out)]
    r = CliRunner().invoke(
        main,
        [*base, "--target", "auto", "--budget", "1e-12", "--data", str(d / "held.npz"),
         "--auto-candidates", "int8-lut,int8-lut:2", "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 2 and "not reachable" in r.output
    assert not out.exists()
    r = CliRunner().invoke(main, [*base, "--target", "int8-lut", "--budget", "1e-3"])
    assert r.exit_code == 2 and "go with --target auto" in r.output
    r = CliRunner().invoke(main, [*base, "--target", "auto", "--budget", "1e-3"])
    assert r.exit_code == 2 and "needs --ranges, --budget and --data" in r.output
    r = CliRunner().invoke(
        main,
        [*base, "--target", "auto", "--budget", "1e-3", "--data", str(d / "held.npz"),
         "--score-output", "probs"],
    )  # fmt: skip
    assert r.exit_code == 2 and "no output named probs" in r.output
    assert not out.exists()


def test_allocation_by_error_per_byte() -> None:
    from gelu_quant.auto_choice import Candidate, _allocate, _Measured

    a, b, c = Candidate("int8-lut"), Candidate("int8-lut", 2), Candidate("int8-lut-fp16out")
    # s: c (0.8 per 20 B) beats b (0.5 per 50 B); t's upgrade costs 900 B for 0.05
    table = {
        "s": {
            a: _Measured(1.0, 0.9, 100),
            b: _Measured(0.5, 0.9, 150),
            c: _Measured(0.2, 0.9, 120),
        },
        "t": {a: _Measured(0.1, 0.9, 100), b: _Measured(0.05, 0.9, 1000)},
    }
    assert _allocate(["s", "t"], table, 0.35) == {"s": c, "t": a}
    assert _allocate(["s", "t"], table, 10.0) == {"s": a, "t": a}
    assert _allocate(["s", "t"], table, 0.0) == {"s": c, "t": b}  # as good as it gets
