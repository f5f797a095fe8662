"""The streaming collector on hand-made models: per-site statistics equal the oracle's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _calib_models import batches, bias_gelu_model, oracle_preactivations, two_gelu_model

from gelu_quant.calib.collector import build_probe, collect
from gelu_quant.calib.stats import TensorStats
from gelu_quant.graph.sites import GeluSite


def _oracle_stats(values: np.ndarray) -> TensorStats:
    st = TensorStats()
    st.update(values)
    return st


@pytest.mark.parametrize("workers", [0, 1, 2, None])
def test_collect_equals_stats_of_the_concatenated_preactivations(workers: int | None) -> None:
    model, sites = two_gelu_model()
    data = batches(5)
    c = collect(model, sites, ({"x": b} for b in data), threads=1, workers=workers)
    p0, p1 = oracle_preactivations(data)
    assert c.batches == 5 and c.samples == sum(b.shape[0] for b in data)
    for sid, p in (("gelu0", p0), ("gelu1", p1)):
        st = c.stats[sid]
        assert st.min == float(p.min()) and st.max == float(p.max())
        assert st.count == p.size and st.nonfinite == 0
        # one pass over all data in one batch gives the same exact statistics
        assert st == _oracle_stats(p)
    # the observed output range of GELU 0 (reduced inside the graph)
    assert c.output_min["gelu0"] >= -0.17 and c.output_max["gelu0"] == pytest.approx(
        float(p0.max()), rel=1e-6
    )


def test_nonfinite_values_are_counted_and_excluded() -> None:
    model, sites = two_gelu_model()
    data = batches(3)
    data[1][0, :3] = [np.nan, np.inf, -np.inf]
    c = collect(model, sites[:1], ({"x": b} for b in data), threads=1)
    st = c.stats["gelu0"]
    assert st.nonfinite == 3
    p0, _ = oracle_preactivations(data)
    fin = p0[np.isfinite(p0)]
    assert st.count == fin.size and st.min == float(fin.min()) and st.max == float(fin.max())


def test_bias_folded_site_sees_input_plus_bias() -> None:
    model, sites = bias_gelu_model()
    data = batches(4)
    c = collect(model, sites, ({"x": b} for b in data), threads=1)
    b = onnx.numpy_helper.to_array(model.graph.initializer[0])
    expect = np.concatenate(data) + b
    assert c.stats["gelu0"] == _oracle_stats(expect)


def test_probe_exposes_only_site_tensors() -> None:
    model, sites = two_gelu_model()
    probe, names, skipped = build_probe(model, sites)
    outs = [o.name for o in probe.graph.output]
    assert "y" not in outs and {"p0", "p1"} <= set(outs) and not skipped
    assert names["gelu0"][0] == "p0"
    assert len(model.graph.output) == 1  # the user's model is untouched


def test_subgraph_sites_are_skipped_with_a_reason() -> None:
    model, sites = two_gelu_model()
    inner = GeluSite(
        id="If_0/then_branch/gelu0",
        form="exact",
        spelling="pattern:erf",
        input="a",
        output="b",
        nodes=(),
        graph="If_0/then_branch",
    )
    c = collect(model, [sites[0], inner], ({"x": b} for b in batches(2)), threads=1)
    assert "If_0/then_branch/gelu0" in c.skipped and "gelu0" in c.stats


def test_discovered_sites_match_hand_made_ones(tmp_path: object) -> None:
    from gelu_quant.graph.discover import find_gelu_sites

    model, sites = two_gelu_model()
    found = find_gelu_sites(model)
    assert [(s.input, s.output) for s in found] == [(s.input, s.output) for s in sites]


def test_memory_does_not_hold_batches() -> None:
    """The collector keeps no reference to the fetched tensors (statistics only)."""
    import gc
    import weakref

    model, sites = two_gelu_model()
    seen: list[weakref.ref[np.ndarray]] = []

    def feeds():  # type: ignore[no-untyped-def]
        for b in batches(3):
            seen.append(weakref.ref(b))
            yield {"x": b}

    c = collect(model, sites, feeds(), threads=1)
    gc.collect()
    assert c.batches == 3 and all(r() is None for r in seen)
