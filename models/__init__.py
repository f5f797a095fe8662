"""Builders for the real models used by tests, the demo and benchmarks."""
