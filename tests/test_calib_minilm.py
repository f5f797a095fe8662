"""all-MiniLM-L6-v2: the 6 GELU sites calibrated from a text file and from an .npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gelu_quant.calib.calibration import calibrate_model, collect_stats
from gelu_quant.calib.ranges_file import StatsFile

pytestmark = pytest.mark.slow

N_SENTENCES = 48
BATCH = 16


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gelu_quant.models.corpus import stdlib_sentences
    from gelu_quant.models.minilm import minilm_onnx, minilm_tokenizer_dir, tokenize

    d = tmp_path_factory.mktemp("minilm_calib")
    texts = stdlib_sentences("calibration", limit=N_SENTENCES)
    (d / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    np.savez(d / "tokens.npz", **tokenize(texts, 128))
    return {
        "model": minilm_onnx("opset17"),
        "tokenizer": minilm_tokenizer_dir(),
        "text": d / "texts.txt",
        "npz": d / "tokens.npz",
        "dir": d,
    }


def _torch_preactivations(npz: Path) -> list[np.ndarray]:
    """Oracle: the FFN pre-activations (intermediate.dense outputs) from the torch model."""
    import torch

    from gelu_quant.models.minilm import load_torch_model

    model = load_torch_model()
    captured: list[np.ndarray] = []
    layers = model.encoder.encoder.layer
    hooks = [
        layer.intermediate.dense.register_forward_hook(
            lambda _m, _i, out: captured.append(out.detach().numpy().copy())
        )
        for layer in layers
    ]
    with np.load(npz) as z:
        args = [torch.from_numpy(z[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.no_grad():
        model(*args)
    for h in hooks:
        h.remove()
    return captured


def test_text_and_npz_give_the_six_sites_and_identical_statistics(minilm: dict[str, Path]) -> None:
    out = minilm["dir"] / "ranges_text.json"
    stats_text = minilm["dir"] / "stats_text.npz"
    r_text = calibrate_model(
        minilm["model"],
        minilm["text"],
        out,
        tokenizer=minilm["tokenizer"],
        batch_size=BATCH,
        threads=2,
        method="percentile",
        save_stats=stats_text,
    )
    assert r_text.site_ids == [f"gelu{i}" for i in range(6)]
    assert r_text.data["samples"] == N_SENTENCES and r_text.data["batches"] == 3
    sf_npz = collect_stats(minilm["model"], minilm["npz"], batch_size=BATCH, threads=2)
    sf_text = StatsFile.load(stats_text)
    # the package's tokenizer in the text source and the .npz of models.minilm.tokenize agree,
    # so the two passes see the same tensors: the statistics are identical
    for sid in r_text.site_ids:
        assert sf_text.collected.stats[sid] == sf_npz.collected.stats[sid]
    # against the torch model (an independent implementation): count exact, extremes close
    ref = _torch_preactivations(minilm["npz"])
    for site, p in zip(r_text.sites, ref, strict=True):
        st = sf_npz.collected.stats[site["id"]]
        assert st.count == p.size == N_SENTENCES * 128 * 1536 and st.nonfinite == 0
        assert st.min == pytest.approx(float(p.min()), abs=2e-3)
        assert st.max == pytest.approx(float(p.max()), abs=2e-3)
        assert st.quantile(0.999) == pytest.approx(
            float(np.quantile(p, 0.999)), abs=st.bin_width + 2e-3
        )
        assert st.channel_min is not None and st.channel_min.size == 1536
        lo, hi = r_text.range_for(site["id"])
        assert st.min <= lo < hi <= st.max
    raw = json.loads(out.read_text())
    assert all(
        s["ranges"]["entropy"] is not None and s["ranges"]["mse"] is not None for s in raw["sites"]
    )
    r_text.check_model(minilm["model"])


@pytest.mark.parametrize(
    ("fixture", "spelling", "tol"),
    [
        ("minilm_opset17", "pattern:erf", 2e-3),
        ("minilm_opset20", "onnx:Gelu", 2e-3),
        ("minilm_dynamo", "pattern:erf", 2e-3),
        ("minilm_ort_optimized", "com.microsoft:BiasGelu", 2e-3),
        # int8 weights and activations move the pre-activations by quantization noise
        ("minilm_qdq", "pattern:erf", 0.5),
    ],
)
def test_every_export_spelling_is_calibrated(
    request: pytest.FixtureRequest,
    minilm: dict[str, Path],
    fixture: str,
    spelling: str,
    tol: float,
) -> None:
    """The exporters' GELU spellings (Erf pattern, ONNX Gelu, the dynamo exporter's graph, ORT's
    fused BiasGelu whose pre-activation the probe rebuilds as input + bias, a QDQ model) all
    give the six sites, checked against the torch model's pre-activations."""
    model = request.getfixturevalue(fixture)
    sf = collect_stats(model, minilm["npz"], batch_size=BATCH, threads=2, max_batches=1)
    assert [s.spelling for s in sf.sites] == [spelling] * 6 and not sf.collected.skipped
    with np.load(minilm["npz"]) as z:
        first = {k: z[k][:BATCH] for k in z.files}
    np.savez(minilm["dir"] / f"first_{fixture}.npz", **first)
    ref = _torch_preactivations(minilm["dir"] / f"first_{fixture}.npz")
    for site, p in zip(sf.sites, ref, strict=True):
        st = sf.collected.stats[site.id]
        assert st.count == p.size == BATCH * 128 * 1536 and st.nonfinite == 0
        assert st.min == pytest.approx(float(p.min()), abs=tol)
        assert st.max == pytest.approx(float(p.max()), abs=tol)
