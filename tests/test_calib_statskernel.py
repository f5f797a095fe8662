"""The compiled statistics kernel gives, bit for bit, what the numpy loops give.

The numpy implementation is itself checked against independent oracles in test_calib_stats.py
(which runs under both backends); here the two backends are run side by side on the same
batches, including the awkward ones: non-finite values, float16/float64, huge and tiny values,
non-contiguous views, scalars, growing ranges and channel counts that change mid-stream.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from hypothesis.extra import numpy as hnp

from gelu_quant.calib import stats as stats_module
from gelu_quant.calib.stats import TensorStats

kernel = stats_module._kernel
needs_kernel = pytest.mark.skipif(kernel is None, reason="compiled kernel not built")


def test_compiled_kernel_is_built() -> None:
    """The dev install (make venv) compiles the kernel; a silent fallback would hide a broken
    build behind a slower calibrator."""
    assert stats_module.backend() == "compiled", (
        "gelu_quant.calib._statskernel is not built: install a C compiler and reinstall "
        "(pip install -e .)"
    )


def _both(batches: list[np.ndarray]) -> tuple[TensorStats, TensorStats]:
    compiled, plain = TensorStats(), TensorStats()
    for b in batches:
        compiled.update(b)
    saved = stats_module._kernel
    stats_module._kernel = None
    try:
        for b in batches:
            plain.update(b)
    finally:
        stats_module._kernel = saved
    return compiled, plain


def _assert_same(a: TensorStats, b: TensorStats) -> None:
    assert a.to_json() == b.to_json()
    np.testing.assert_array_equal(a.counts, b.counts)


def _cases() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(11)
    normal = [(rng.standard_normal((4, 32, 48)) * s).astype(np.float32) for s in (0.1, 2, 30)]
    spiky = [b.copy() for b in normal]
    spiky[0][0, 0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    spiky[2][3, 31, 47] = -np.inf
    all_bad = [np.full((2, 5), np.nan, dtype=np.float32), normal[0]]
    huge = [np.array([3e38, -3e38, 1e-30, 0.0, -1.5], dtype=np.float32)]
    huge64 = [(rng.standard_normal((50, 7)) * 1e300).astype(np.float64)]
    tiny = [(rng.standard_normal((64, 3)) * 1e-12).astype(np.float32)]
    f16 = [(rng.standard_normal((8, 16)) * 4).astype(np.float16)]
    f64 = [rng.standard_normal((9, 11)) * 3, rng.standard_normal((2, 11)) * 50]
    views = [normal[1][:, ::2, 1::3], normal[2].transpose(2, 0, 1)]
    scalars = [np.float32(2.5), np.array(-7.0, dtype=np.float32), normal[0]]
    mismatch = [normal[0], normal[0][..., :40], normal[1]]
    ints = [np.arange(-50, 50, dtype=np.int32).reshape(10, 10)]
    equal = [np.full((100, 4), 1234.5, dtype=np.float32)]
    negative = [(-np.abs(rng.standard_normal((30, 30))) - 5).astype(np.float32)]
    # ranges that grow within one large batch, both ways, with heavy tails
    widening = np.concatenate([rng.standard_normal(20_000) * s for s in (0.1, 1, 10, 100)])
    growing = [widening.astype(np.float32), widening[::-1].astype(np.float32)]
    tails = [rng.standard_t(2, (64, 1536)).astype(np.float32) * 3 for _ in range(3)]
    shifted = [(rng.standard_normal(50_000) + np.linspace(-40, 40, 50_000)).astype(np.float32)]
    return [
        normal,
        spiky,
        all_bad,
        huge,
        huge64,
        tiny,
        f16,
        f64,
        views,
        scalars,
        mismatch,
        ints,
        equal,
        negative,
        growing,
        tails,
        shifted,
    ]


@needs_kernel
@pytest.mark.parametrize("case", range(len(_cases())))
def test_compiled_equals_numpy(case: int) -> None:
    _assert_same(*_both(_cases()[case]))


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(
    hst.lists(
        hnp.arrays(
            dtype=hst.sampled_from([np.float32, np.float64]),
            shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
            elements=hst.floats(allow_nan=True, allow_infinity=True, width=32),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_compiled_equals_numpy_on_any_floats(batches: list[np.ndarray]) -> None:
    _assert_same(*_both(batches))


@needs_kernel
def test_kernel_reports_values_outside_the_window() -> None:
    assert kernel is not None
    counts = np.zeros(8, dtype=np.int64)
    x = np.array([0.5, 1.5, 7.5, 8.5, -0.5, np.nan], dtype=np.float32)
    # bins floor(x) - 0: 0, 1, 7 inside; 8 and -1 outside; NaN skipped
    assert kernel.histogram(x, False, 1.0, 0, counts) == 2
    np.testing.assert_array_equal(counts, [1, 1, 0, 0, 0, 0, 0, 1])


@needs_kernel
def test_kernel_checks_buffer_sizes() -> None:
    assert kernel is not None
    x = np.zeros(10, dtype=np.float32)
    with pytest.raises(ValueError, match="sizes"):
        kernel.channel_extremes(x, False, 3, np.empty(3), np.empty(3))  # 10 % 3 != 0
    with pytest.raises(ValueError, match="sizes"):
        kernel.channel_extremes(x, False, 5, np.empty(4), np.empty(5))
    with pytest.raises(TypeError, match="bytes-like"):  # not contiguous
        kernel.histogram(x, False, 1.0, 0, np.zeros(4, dtype=np.int64)[::2])


def test_environment_selects_the_numpy_statistics() -> None:
    import os
    import subprocess
    import sys

    code = "from gelu_quant.calib.stats import backend; print(backend())"
    env = dict(os.environ, GELU_QUANT_STATS_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "numpy", out.stderr
