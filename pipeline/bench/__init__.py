"""Benchmarks: every figure is a ratio against a baseline measured in the same run.

These machines are noisy, so candidates and baselines are interleaved round by round
and each reports its median; a slow minute hurts both sides alike.
"""
