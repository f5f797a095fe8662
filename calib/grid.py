"""The histogram grid shared by the tensor and per-channel histograms (see
:mod:`gelu_quant.calib.stats`): bins of width ``2**k`` anchored at 0, ``k`` canonical for the
data's range."""

from __future__ import annotations

import math

#: Number of histogram bins (fixed; the width adapts).
NUM_BINS = 4096
#: Smallest width exponent: bins are never narrower than ``2**K_MIN``.
K_MIN = -40
#: Bin indices are kept below ``2**IDX_BITS`` in magnitude so float32 ``floor`` is exact.
IDX_BITS = 24


def width_exponent(lo: float, hi: float, num_bins: int = NUM_BINS) -> int:
    """The canonical width exponent for finite data spanning ``[lo, hi]``.

    The smallest ``k >= K_MIN`` with ``floor(hi/2**k) - floor(lo/2**k) < num_bins`` and
    ``max(|lo|, |hi|) < 2**(k + IDX_BITS)``. Both conditions only get easier as ``k`` grows,
    so the answer is monotone in the data's range.
    """
    mag = max(abs(lo), abs(hi))
    k = K_MIN
    if mag > 0.0:
        k = max(k, math.frexp(mag)[1] - IDX_BITS)  # mag < 2**e  =>  need k >= e - IDX_BITS
    span = hi - lo
    if span > 0.0:
        k = max(k, math.frexp(span / num_bins)[1] - 2)
    while not (
        math.floor(math.ldexp(hi, -k)) - math.floor(math.ldexp(lo, -k)) < num_bins
        and mag < math.ldexp(1.0, k + IDX_BITS)
    ):
        k += 1
    return k
