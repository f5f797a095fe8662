"""Type stub of the C extension built from ``_statskernel.c`` (see that file)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def channel_extremes(
    x: npt.NDArray[Any],
    is_double: bool,
    channels: int,
    out_min: npt.NDArray[np.float64],
    out_max: npt.NDArray[np.float64],
) -> int: ...
def histogram(
    x: npt.NDArray[Any], is_double: bool, scale: float, offset: int, counts: npt.NDArray[np.int64]
) -> int: ...
def channel_histograms(
    x: npt.NDArray[Any],
    is_double: bool,
    channels: int,
    scales: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
) -> int: ...
