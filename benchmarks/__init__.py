"""Benchmarks, outside the importable library: `python -m jobs.benchmark SUITE` runs them."""
