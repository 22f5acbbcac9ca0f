"""Interleaved timing of several callables, reported as medians and ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int = 5,
    warmup: int = 1,
    setups: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """Run each case once per round, in turn, after `warmup` untimed rounds.

    `setups[name]`, if given, runs untimed before every run of that case.
    """
    setups = setups or {}

    def once(name: str, fn: Callable[[], object]) -> float:
        if name in setups:
            setups[name]()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(warmup):
        for name, fn in cases.items():
            once(name, fn)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(once(name, fn))
    return {name: Timing(name, values) for name, values in samples.items()}


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
