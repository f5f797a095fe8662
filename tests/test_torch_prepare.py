"""prepare_qat swaps every kind of GELU; calibrate_ranges gives calibrate's ranges on the same
data (the ONNX export of the same model, run by ONNX Runtime, is the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers_activations = pytest.importorskip("transformers.activations")

from torch import nn  # noqa: E402

from gelu_quant.calib.calibration import calibrate_model  # noqa: E402
from gelu_quant.calib.ranges_file import load_ranges  # noqa: E402
from gelu_quant.errors import BadInputError  # noqa: E402
from gelu_quant.lut.table import build_lut  # noqa: E402
from gelu_quant.models.digits_vit import build_model, digits_train_data, export  # noqa: E402
from gelu_quant.numerics import GELU_FORMS  # noqa: E402
from gelu_quant.torch import (  # noqa: E402
    GeluFakeQuant,
    calibrate_ranges,
    collect_stats,
    fake_quant_modules,
    find_gelus,
    prepare_qat,
)

A = transformers_activations
EXPECTED_FORMS = {
    "GELUActivation": "exact",
    "NewGELUActivation": "tanh",
    "FastGELUActivation": "tanh",
    "PytorchGELUTanh": "tanh",
    "GELUTanh": "tanh",
    "AccurateGELUActivation": "tanh",
    "QuickGELUActivation": "quick",
    "ClippedGELUActivation": "exact",
}


def _activations() -> list[tuple[nn.Module, str]]:
    acts: list[tuple[nn.Module, str]] = [
        (nn.GELU(), "exact"),
        (nn.GELU(approximate="tanh"), "tanh"),
    ]
    for name, form in EXPECTED_FORMS.items():
        cls = getattr(A, name, None)
        if cls is None:
            continue
        acts.append((cls(-10.0, 10.0) if name == "ClippedGELUActivation" else cls(), form))
    return acts


class _Chain(nn.Module):
    def __init__(self, acts: list[nn.Module]) -> None:
        super().__init__()
        self.acts = nn.ModuleList(acts)
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a in self.acts:
            x = a(self.lin(x))
        return x


def test_every_gelu_class_is_found_with_its_form() -> None:
    acts = _activations()
    assert len(acts) >= 9  # nn.GELU twice and at least 7 transformers classes
    usable = [(a, f) for a, f in acts if f in GELU_FORMS]
    model = _Chain([a for a, _ in usable])
    found = find_gelus(model)
    assert [g.form for g in found] == [f for _, f in usable]
    assert [g.site_id for g in found] == [f"gelu{i}" for i in range(len(usable))]
    ranges = {g.site_id: (-4.0, 4.0) for g in found}
    prepare_qat(model, ranges, bits=6, learn_ranges=False)
    fqs = fake_quant_modules(model)
    assert len(fqs) == len(usable) and not find_gelus(model)
    for fq, (_, form) in zip(fqs, usable, strict=True):
        assert fq.form == form and fq.in_qparams.bits == 6
        spec = build_lut(in_range=(-4.0, 4.0), form=form, in_bits=6, out_bits=6)  # type: ignore[arg-type]
        if form == "exact" and fq.out_qparams != spec.out_qparams:  # the clipped one
            continue
        assert fq.spec() == spec


def _quick_table_oracle(lo: float, hi: float, bits: int) -> tuple[np.ndarray, float, int]:
    """QuickGELU's table written out independently in float64: the input codes of the range
    (ONNX's asymmetric qparams, scale rounded to float32), ``x sigmoid(1.702 x)`` of each, the
    output qparams over QuickGELU's range on the codes' real range (holding 0), entries rounded
    half to even and saturated."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s_in = float(np.float32((hi - lo) / (qmax - qmin)))
    z_in = int(np.clip(np.rint(qmin - lo / s_in), qmin, qmax))
    x = (np.arange(qmin, qmax + 1, dtype=np.float64) - z_in) * s_in
    g = x / (1.0 + np.exp(-1.702 * x))
    # the output range is QuickGELU's over the continuous input range: its minimum is where
    # d/dx [x sigmoid(a x)] = sigmoid(a x) (1 + a x (1 - sigmoid(a x))) = 0, by bisection
    a, b = -3.0, 0.0
    for _ in range(200):
        m = 0.5 * (a + b)
        if 1.0 + 1.702 * m * (1.0 - 1.0 / (1.0 + np.exp(-1.702 * m))) < 0.0:
            a = m
        else:
            b = m
    x_min = 0.5 * (a + b)
    x_lo, x_hi = float(x[0]), float(x[-1])  # the codes' real range
    g_min = x_min if x_lo < x_min else x_lo
    g_min = g_min / (1.0 + np.exp(-1.702 * g_min))
    glo, ghi = min(g_min, 0.0), max(x_hi / (1.0 + np.exp(-1.702 * x_hi)), 0.0)
    s_out = float(np.float32((ghi - glo) / (qmax - qmin)))
    z_out = int(np.clip(np.rint(qmin - glo / s_out), qmin, qmax))
    codes = np.clip(np.rint(g / s_out) + z_out, qmin, qmax).astype(np.int64)
    return codes, s_out, z_out


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_quick_gelu_is_its_table_on_every_code(bits: int) -> None:
    """transformers' QuickGELUActivation becomes the quick-form table: on every input code's
    value and the float32 neighbours of every rounding midpoint, bit for bit the numpy spec, whose
    entries are the float64 oracle's."""
    lo, hi = -5.0, 7.5
    model = _Chain([A.QuickGELUActivation()])
    found = find_gelus(model)
    assert [g.form for g in found] == ["quick"]
    prepare_qat(model, {"gelu0": (lo, hi)}, bits=bits, learn_ranges=False)
    (fq,) = fake_quant_modules(model)
    spec = build_lut(in_range=(lo, hi), form="quick", in_bits=bits, out_bits=bits)
    assert fq.form == "quick" and fq.spec() == spec
    want_codes, s_out, z_out = _quick_table_oracle(lo, hi, bits)
    assert spec.out_qparams is not None
    assert (spec.out_qparams.scale, spec.out_qparams.zero_point) == (s_out, z_out)
    assert np.array_equal(spec.table.astype(np.int64), want_codes)
    iq = spec.in_qparams
    s = np.float64(np.float32(iq.scale))
    k = np.arange(iq.qmin - 2, iq.qmax + 3, dtype=np.float64) - iq.zero_point
    mids = ((k + 0.5) * s).astype(np.float32)
    x = np.concatenate(
        [
            (k * s).astype(np.float32),
            mids,
            np.nextafter(mids, np.float32(np.inf)),
            np.nextafter(mids, np.float32(-np.inf)),
            np.array([np.nan, np.inf, -np.inf], np.float32),
        ]
    )
    with torch.no_grad():
        got = fq(torch.from_numpy(x)).numpy()
    want = spec.evaluate(x)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # every code is reached, and each code's value is its table entry dequantized
    codes = fq.input_codes(torch.from_numpy(x)).numpy()
    assert set(codes.tolist()) == set(range(iq.qmin, iq.qmax + 1))
    on_codes = got[: k.size][2:-2]
    deq = ((want_codes - z_out) * np.float32(s_out)).astype(np.float32)
    assert np.array_equal(on_codes, deq)


def test_quick_gelu_calibrates_and_trains() -> None:
    """calibrate_ranges on a QuickGELU site gives the min/max of its inputs; the prepared quick
    table has finite LSQ gradients."""
    torch.manual_seed(3)
    model = _Chain([A.QuickGELUActivation()])
    x = torch.randn(256, 8) * 6
    ranges = calibrate_ranges(model, [(x,)], "minmax")
    with torch.no_grad():
        pre = model.lin(x)
    assert ranges["gelu0"] == pytest.approx((float(pre.min()), float(pre.max())), abs=1e-6)
    prepare_qat(model, ranges, bits=6, learn_ranges=True)
    (fq,) = fake_quant_modules(model)
    assert fq.form == "quick"
    y = fq(x.reshape(-1))
    y.sum().backward()  # the quick estimator's gradients exist and are finite
    assert fq.in_scale.grad is not None and torch.isfinite(fq.in_scale.grad)


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_tail_cut_gives_converts_range(bits: int) -> None:
    """tail_cut=True builds the table over cut_range (what convert does with a calibrated range),
    at the table's code widths; without it the range is used as given."""
    from gelu_quant.lut.tails import cut_range

    lo, hi = -17.0, 10.0
    cut = prepare_qat(_Chain([nn.GELU()]), {"gelu0": (lo, hi)}, bits=bits, tail_cut=True)
    plain = prepare_qat(_Chain([nn.GELU()]), {"gelu0": (lo, hi)}, bits=bits)
    (fc,), (fp,) = fake_quant_modules(cut), fake_quant_modules(plain)
    want = cut_range(lo, hi, in_bits=bits, out_bits=bits)
    assert lo < want[0] < -0.7
    assert fc.spec() == build_lut(in_range=want, in_bits=bits, out_bits=bits)
    assert fp.spec() == build_lut(in_range=(lo, hi), in_bits=bits, out_bits=bits)
    assert fc.in_qparams.scale < fp.in_qparams.scale


def test_functional_gelu_calls_are_swapped_by_fx() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.act = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.gelu(self.a(x), approximate="tanh")
            return nn.functional.gelu(self.act(y))

    model = Functional()
    ranges = {f"gelu{i}": (-3.0, 3.0) for i in range(3)}
    gm = prepare_qat(model, ranges, functional=True, learn_ranges=False)
    fqs = fake_quant_modules(gm)
    assert [f.form for f in fqs] == ["exact", "tanh", "exact"]  # module first, then calls
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    specs = {f.site_id: f.spec() for f in fqs}
    with torch.no_grad():
        want = model.a(x).numpy()
        want = specs["gelu1"].evaluate(want)
        want = specs["gelu0"].evaluate(want)
        want = specs["gelu2"].evaluate(want)
        got = gm(x).numpy()
    assert np.array_equal(got, want)


@pytest.fixture(scope="module")
def vit_calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, np.ndarray]:
    """An (untrained, seeded) digits ViT, its ONNX export and its ranges file from 192 images."""
    tmp = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    vit = build_model().eval()
    x = digits_train_data()[0][:192]
    export(vit, tmp / "vit.onnx")
    np.savez(tmp / "cal.npz", pixels=x)
    calibrate_model(tmp / "vit.onnx", tmp / "cal.npz", tmp / "r.json", batch_size=64)
    return vit, tmp / "r.json", x


def test_ranges_file_of_another_model_is_refused(
    vit_calibrated: tuple[nn.Module, Path, np.ndarray],
) -> None:
    exact = _Chain([nn.GELU(), nn.GELU()])  # the ViT's GELUs are tanh
    with pytest.raises(BadInputError, match="tanh"):
        prepare_qat(exact, vit_calibrated[1])


def test_torch_calibration_matches_gelu_quant_calibrate(
    vit_calibrated: tuple[nn.Module, Path, np.ndarray],
) -> None:
    import copy

    vit, path, x = vit_calibrated
    rf = load_ranges(path)
    batches = [(torch.from_numpy(x[i : i + 64]),) for i in range(0, len(x), 64)]
    stats = collect_stats(vit, batches)
    for method in ("minmax", "percentile", "entropy", "mse"):
        got = calibrate_ranges(vit, batches, method, stats=stats)
        assert list(got) == rf.site_ids == ["gelu0", "gelu1"]
        for site, (lo, hi) in got.items():
            want = rf.range_for(site, method)
            # same statistics and methods; the two runtimes' float32 pre-activations may
            # differ in the last bits (a few ulps of the extremes)
            np.testing.assert_allclose((lo, hi), want, rtol=1e-6, atol=1e-6)
        model = prepare_qat(copy.deepcopy(vit), rf, method=method, learn_ranges=False)
        for fq in fake_quant_modules(model):
            want_spec = build_lut(in_range=rf.range_for(fq.site_id, method), form="tanh")
            assert fq.spec() == want_spec


def test_site_order_follows_execution(tmp_path: Path) -> None:
    class Backwards(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.second = nn.GELU()
            self.first = nn.GELU(approximate="tanh")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(self.first(x))

    m = Backwards()
    assert [g.name for g in find_gelus(m)] == ["second", "first"]
    assert [g.name for g in find_gelus(m, (torch.zeros(2),))] == ["first", "second"]
    prepare_qat(m, {"gelu0": (-1.0, 2.0), "gelu1": (-3.0, 3.0)}, example_inputs=(torch.zeros(2),))
    assert isinstance(m.first, GeluFakeQuant) and m.first.site_id == "gelu0"
    assert m.first.in_qparams.real_range[1] == pytest.approx(2.0, abs=0.02)


@pytest.mark.parametrize(
    ("target", "bits", "out_bits", "method"),
    [("int8-lut", 8, 8, "minmax"), ("int8-lut", 8, 8, "mse"), ("int6-lut-int8out", 6, 8, "mse")],
)
def test_grouped_tables_from_a_ranges_file_are_converts(
    vit_calibrated: tuple[nn.Module, Path, np.ndarray],
    tmp_path: Path,
    target: str,
    bits: int,
    out_bits: int,
    method: str,
) -> None:
    """prepare_qat(groups=K) starts from exactly the tables `convert --groups K --group-method M`
    writes for the exported model (oracle: the converter's manifest specs), and the modules
    compute them."""
    import copy

    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.lut.spec import spec_from_json
    from gelu_quant.torch import GroupedGeluFakeQuant

    vit, path, _ = vit_calibrated
    rf = load_ranges(path)
    res = convert_file(
        path.parent / "vit.onnx",
        tmp_path / "g.onnx",
        ConvertConfig(target, groups=4, group_method=method),
        ranges=rf,
    )
    want = {r.id: spec_from_json(r.spec or {}) for r in res.manifest.converted}
    model = prepare_qat(
        copy.deepcopy(vit), rf, bits=bits, out_bits=out_bits, groups=4, group_method=method
    )
    mods = [m for m in model.modules() if isinstance(m, GroupedGeluFakeQuant)]
    assert sorted(m.site_id for m in mods) == sorted(want) == ["gelu0", "gelu1"]
    plain = prepare_qat(copy.deepcopy(vit), rf, bits=bits, out_bits=out_bits, groups=4)
    minmax = {m.site_id: m.spec() for m in plain.modules() if isinstance(m, GroupedGeluFakeQuant)}
    for m in mods:
        assert m.spec() == want[m.site_id]
        assert (m.spec() == minmax[m.site_id]) == (method == "minmax")  # the method is used
        assert m.in_scale.requires_grad  # learnable per-group scales by default
        h = torch.from_numpy(np.random.default_rng(3).normal(0, 3, (64, m.spec().channels)))
        with torch.no_grad():
            got = m(h.float()).numpy()
        assert np.array_equal(got, want[m.site_id].evaluate(h.float().numpy()))


def test_grouped_prepare_refusals(vit_calibrated: tuple[nn.Module, Path, np.ndarray]) -> None:
    import copy

    vit, path, _ = vit_calibrated
    with pytest.raises(BadInputError, match="ranges file with per-channel"):
        prepare_qat(copy.deepcopy(vit), {"gelu0": (-3.0, 3.0)}, groups=4)
    with pytest.raises(BadInputError, match="functional"):
        prepare_qat(copy.deepcopy(vit), path, groups=4, functional=True)
    doc = json.loads(path.read_text())
    for site in doc["sites"]:
        site.pop("channels", None)
    bare = path.parent / "bare.json"
    bare.write_text(json.dumps(doc))
    with pytest.raises(BadInputError, match="per-channel ranges"):
        prepare_qat(copy.deepcopy(vit), bare, groups=4)
