"""Collect map tasks' partial results: progress as each finishes, merged in task order.

Merging in task order (each partial as soon as the ones before it are in) gives the same
float sums on every run, whatever order the tasks finish in; the progress meter moves as
soon as any task finishes. Used by the SAE statistics and evaluation drivers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import ray

from pipeline.progress import RowProgress

T = TypeVar("T")


def merge_in_order(
    refs: Sequence[ray.ObjectRef],
    rows: Sequence[int],
    merge: Callable[[T, T], T],
    progress: bool = False,
) -> T:
    """`merge` over the results of `refs` in order; `rows[i]`: the rows task i covers."""
    meter = RowProgress(sum(rows)) if progress else None
    index_of = {ref: i for i, ref in enumerate(refs)}
    arrived: dict[int, T] = {}
    merged, next_index, waiting = None, 0, list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            i = index_of[done[0]]
            arrived[i] = ray.get(done[0])
            if meter is not None:
                meter.advance(rows[i])
            while next_index in arrived:
                part = arrived.pop(next_index)
                merged = part if merged is None else merge(merged, part)
                next_index += 1
    finally:
        if meter is not None:
            meter.close()
    return merged
