"""Keeps the last N batches a detector saw (a bounded window)."""

from __future__ import annotations

from collections import deque

import torch

from pipeline.accumulators.common import ArrayLike, require_positive


class LastNBatches:
    """Ring buffer of the last ``max_batches`` batches, kept as detached CPU copies.

    ``num_seen`` counts every batch ever given to ``update``. Recency is defined by update
    order and, for ``merge``, by argument order: ``a.merge(b)`` treats b's batches as newer.
    """

    def __init__(self, max_batches: int) -> None:
        require_positive("max_batches", max_batches)
        self.max_batches = max_batches
        self.num_seen = 0
        self._batches: deque[torch.Tensor] = deque(maxlen=max_batches)

    def update(self, batch: ArrayLike) -> None:
        """Store a copy of ``batch``, dropping the oldest batch once ``max_batches`` are held."""
        t = torch.as_tensor(batch).detach()
        self._batches.append(t.to("cpu", copy=True))
        self.num_seen += 1

    def batches(self) -> list[torch.Tensor]:
        """Copies of the held batches, oldest first."""
        return [b.clone() for b in self._batches]

    def clear(self) -> None:
        """Forget every batch and reset ``num_seen``: back to a fresh accumulator."""
        self._batches.clear()
        self.num_seen = 0

    def merge(self, other: LastNBatches) -> LastNBatches:
        """New buffer holding the last ``max_batches`` of self's batches followed by other's."""
        if other.max_batches != self.max_batches:
            raise ValueError(
                f"other.max_batches={other.max_batches} differs from max_batches={self.max_batches}"
            )
        out = LastNBatches(self.max_batches)
        out._batches.extend(self._batches)
        out._batches.extend(other._batches)
        out.num_seen = self.num_seen + other.num_seen
        return out
