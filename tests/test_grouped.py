"""Grouped tables: the channel partition against brute force, the numpy reference against a
float64 oracle written here, JSON round trips, and refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import SpecError
from gelu_quant.lut.grouped import GroupedLutSpec, build_grouped_lut, partition_channels
from gelu_quant.lut.spec import spec_from_json
from gelu_quant.numerics import GELU_ARGMIN, GELU_MIN, gelu


def _cost(lo: np.ndarray, hi: np.ndarray, groups: np.ndarray) -> float:
    """sum over channels of their group's squared range width (ranges contain 0)."""
    total = 0.0
    for g in np.unique(groups):
        m = groups == g
        width = max(hi[m].max(), 0.0) - min(lo[m].min(), 0.0)
        total += m.sum() * width**2
    return float(total)


def _brute_force(lo: np.ndarray, hi: np.ndarray, k: int) -> float:
    """Best cost over every way to cut the hi-sorted channels into at most k contiguous runs."""
    order = np.lexsort((np.arange(lo.size), hi))
    n = lo.size
    best = np.inf
    for parts in range(1, min(k, n) + 1):
        for cuts in itertools.combinations(range(1, n), parts - 1):
            groups = np.empty(n, dtype=np.int64)
            for g, (i, j) in enumerate(zip((0, *cuts), (*cuts, n), strict=True)):
                groups[order[i:j]] = g
            best = min(best, _cost(lo, hi, groups))
    return best


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.lists(
        st.tuples(st.floats(-20, 0, width=32), st.floats(0, 30, width=32)), min_size=1, max_size=8
    ),
    st.integers(1, 4),
)
def test_optimal_partition_matches_brute_force(ranges: list[tuple[float, float]], k: int) -> None:
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    groups = partition_channels(lo, hi, k)
    assert groups.max() < k
    assert _cost(lo, hi, groups) == pytest.approx(_brute_force(lo, hi, k), rel=1e-9, abs=1e-12)
    # groups are contiguous runs of the hi order, numbered by increasing maximum
    order = np.lexsort((np.arange(lo.size), hi))
    assert np.all(np.diff(groups[order]) >= 0)


def test_equal_partition_and_the_optimal_one_on_outlier_channels() -> None:
    """Channel ranges shaped like MiniLM's: a bulk within -9..4 and a few outlier channels to
    25. Equal groups put the outliers with bulk channels; the optimal cut isolates them."""
    rng = np.random.default_rng(3)
    lo = -rng.uniform(3, 9, 1536)
    hi = rng.uniform(2, 4, 1536)
    hi[rng.choice(1536, 6, replace=False)] = rng.uniform(14, 25, 6)
    eq = partition_channels(lo, hi, 8, "equal")
    assert sorted(np.bincount(eq)) == [192] * 8
    opt = partition_channels(lo, hi, 8)
    assert _cost(lo, hi, opt) < _cost(lo, hi, eq)  # equal runs are one feasible partition
    top = opt[np.argsort(hi)[-6:]]
    assert np.all(top == opt.max()) and np.sum(opt == opt.max()) <= 6


def _oracle(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """int8 in/out table of GELU over [lo, hi], computed from the formulas: asymmetric qparams
    (zero exactly representable), Q = sat(rint(x / s) + z) in float32 division, table entry
    Q_out(gelu64(DQ_in(q))), output DQ = (code - z_out) * s_out in float32."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = np.float32((hi - lo) / 255.0)
    z = int(np.clip(np.rint(-128 - lo / float(s)), -128, 127))
    codes = np.arange(-128, 128)
    xin = (codes - z) * np.float64(s)
    y = gelu(xin)
    # output range: GELU over the real interval the input codes span (its minimum inside)
    ends = gelu(np.array([xin[0], xin[-1]]))
    inside = xin[0] <= GELU_ARGMIN <= xin[-1]
    olo = min(ends.min(), GELU_MIN if inside else np.inf, 0.0)
    ohi = max(ends.max(), 0.0)
    so = np.float32((ohi - olo) / 255.0)
    zo = int(np.clip(np.rint(-128 - olo / float(so)), -128, 127))
    table = np.clip(np.rint(y / np.float64(so)) + zo, -128, 127)
    q = np.clip(np.rint(x.astype(np.float32) / s) + z, -128, 127).astype(np.int64)
    return ((table[q + 128] - zo) * so).astype(np.float32)


def test_evaluate_matches_the_per_channel_oracle() -> None:
    rng = np.random.default_rng(0)
    C = 24
    ch_lo, ch_hi = -rng.uniform(1, 8, C), rng.uniform(1, 20, C)
    groups = partition_channels(ch_lo, ch_hi, 4)
    ranges = [(ch_lo[groups == g].min(), ch_hi[groups == g].max()) for g in range(4)]
    spec = build_grouped_lut(groups, ranges)
    x = rng.uniform(-10, 22, (3, 50, C)).astype(np.float32)
    got = spec.evaluate(x)
    for c in range(C):
        want = _oracle(x[..., c], *ranges[groups[c]])
        assert np.array_equal(got[..., c], want), c
    assert spec.table_bytes == 4 * 256
    assert spec.arrays()["tables"].shape == (4, 256)
    assert "4 tables" in spec.summary()


def test_range_chooser_callable_and_json_round_trip() -> None:
    rng = np.random.default_rng(1)
    lo, hi = -rng.uniform(1, 5, 16), rng.uniform(1, 9, 16)
    groups = partition_channels(lo, hi, 3)
    spec = build_grouped_lut(
        groups, lambda m: (float(lo[m].min()), float(hi[m].max())), out_dtype="float16"
    )
    back = spec_from_json(spec.to_json())
    assert isinstance(back, GroupedLutSpec) and back == spec
    x = rng.standard_normal((5, 16)).astype(np.float32) * 4
    assert np.array_equal(back.evaluate(x), spec.evaluate(x))
    assert back.evaluate(x).dtype == np.float16


def test_refusals() -> None:
    good = build_grouped_lut(np.array([0, 1, 0]), [(-1.0, 1.0), (-2.0, 3.0)])
    with pytest.raises(SpecError, match="last axis has 3"):
        good.evaluate(np.zeros((2, 4), np.float32))
    with pytest.raises(SpecError, match=r"outside 0\.\.1"):
        GroupedLutSpec(groups=good.groups, channel_group=np.array([0, 2, 1]))
    with pytest.raises(SpecError, match="same input/output dtype"):
        other = build_grouped_lut(np.array([0]), [(-1.0, 1.0)], out_dtype="float16")
        GroupedLutSpec(groups=(good.groups[0], other.groups[0]), channel_group=np.array([0, 1]))
    with pytest.raises(SpecError, match="no channels"):
        build_grouped_lut(np.array([0, 2]), [(-1.0, 1.0)] * 3)
    with pytest.raises(SpecError, match="groups must be"):
        partition_channels([0.0], [1.0], 0)
    with pytest.raises(SpecError, match="finite"):
        partition_channels([np.nan], [1.0], 2)


def test_c_header_holds_the_tables_and_the_channel_map(tmp_path: Path) -> None:
    """The header compiles (-Wall -Werror) and its arrays are the spec's, read back in C."""
    import shutil
    import subprocess

    from gelu_quant.lut.export import c_header

    spec = build_grouped_lut(np.array([0, 1, 1, 0, 2]), [(-1.0, 1.0), (-2.0, 6.0), (-3.0, 20.0)])
    (tmp_path / "g.h").write_text(c_header(spec, "ffn0"))
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "g.h"\nint main(void) {\n'
        "  for (int c = 0; c < 5; c++) { int g = ffn0_channel_group[c];\n"
        '    for (int q = 0; q < 256; q++) printf("%d ", ffn0_tables[g][q]); }\n'
        '  printf("\\n"); return 0; }\n'
    )
    exe = tmp_path / "main"
    subprocess.run(
        [cc, "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(tmp_path / "main.c")], check=True
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    want = np.concatenate([spec.groups[g].table for g in spec.channel_group]).astype(int)
    assert [int(v) for v in out] == list(want)
