"""prepare_qat swaps every kind of GELU; calibrate_ranges gives calibrate's ranges on the same
data (the ONNX export of the same model, run by ONNX Runtime, is the oracle)."""

from __future__ import annotations

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


def test_quick_gelu_needs_a_quick_table() -> None:
    if "quick" in GELU_FORMS:
        pytest.skip("gelu_quant.numerics has the quick form here")
    with pytest.raises(Exception, match="quick"):
        prepare_qat(_Chain([A.QuickGELUActivation()]), {"gelu0": (-4.0, 4.0)})


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
