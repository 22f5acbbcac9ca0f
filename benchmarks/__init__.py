"""Benchmarks, outside the importable library: `python -m jobs.benchmark SUITE` runs them.

Every figure is a ratio against a baseline measured in the same run, and the baseline does
the same work as the measured path except the part being measured (the same forward path,
the same bytes, the same number of writers). These machines are noisy, so candidates and
baselines are interleaved round by round and each reports its median; a slow minute hurts
both sides alike. Nothing in `pipeline/` imports this package.
"""
