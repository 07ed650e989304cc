"""Benchmarks (one script per target, e.g. `python -m bench.kernels`); results are appended as JSON lines."""
