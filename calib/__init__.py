"""Calibration: observers, the streaming collector, range selection and data sources.

Modules:

- :mod:`~gelu_quant.calib.stats` — :class:`TensorStats`, the exact mergeable observer;
- :mod:`~gelu_quant.calib.methods` — range selection (minmax, percentile, entropy, mse) as pure
  functions of the statistics, and GELU's output range over an input range;
- :mod:`~gelu_quant.calib.data` — data sources (``open_data_source``, ``InputSpec``,
  ``model_input_specs``), shared with the evaluator;
- :mod:`~gelu_quant.calib.collector` — the probe model and the streaming pass;
- :mod:`~gelu_quant.calib.ranges_file` — the ranges file (``load_ranges``, ``RangesFile``), the
  statistics shards (``StatsFile``) and the model fingerprint;
- :mod:`~gelu_quant.calib.calibration` — ``calibrate_model`` and ``merge_stats``, behind the CLI.
"""

from __future__ import annotations

from gelu_quant.calib.data import DataSource, InputSpec, model_input_specs, open_data_source
from gelu_quant.calib.stats import TensorStats

__all__ = [
    "DataSource",
    "InputSpec",
    "TensorStats",
    "model_input_specs",
    "open_data_source",
]
