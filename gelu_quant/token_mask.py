"""Which rows of a ``[batch, seq, C]`` tensor are real tokens: the feed's ``attention_mask``.

Text models run on batches padded to a fixed length; the padded positions' outputs are
ignored by every consumer (pooling, token heads and generation all mask them), and they lie
outside the data the model was trained on. Calibration's row sample leaves them out, and the
evaluation compares real tokens only (``eval --include-padding`` compares every position).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


def token_mask(feed: Mapping[str, Any], shape: tuple[int, ...]) -> npt.NDArray[np.bool_] | None:
    """The real-token mask of a tensor of ``shape`` (``[batch, seq, C]``): the feed's
    ``attention_mask`` when its shape is ``[batch, seq]``; None (every row) otherwise."""
    m = feed.get("attention_mask")
    if m is None or len(shape) != 3:
        return None
    m = np.asarray(m)
    if m.shape != tuple(shape[:2]):
        return None
    return m != 0
