"""Calibration: observers, the streaming collector, range selection and data sources."""
