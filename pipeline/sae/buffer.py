"""A bounded shuffle buffer between an activation stream and SAE training.

Activations arrive in corpus order: consecutive rows are tokens of the same document,
strongly correlated. Training batches should look i.i.d. A mixing buffer (SAELens
`training/mixing_buffer.py`) fills up to `buffer_size` rows, shuffles, serves half of
them as batches and keeps the other half to mix with what comes next, so a row can
stay several rounds. Memory is bounded by `buffer_size` plus one incoming chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch


def mixing_buffer(
    chunks: Iterable[np.ndarray | torch.Tensor],
    buffer_size: int,
    batch_size: int,
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Shuffled float32 batches [batch_size, d] from chunks of rows [n, d] in stream order.

    The last rows that do not fill a batch are dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if buffer_size < 2 * batch_size:
        raise ValueError(
            f"buffer_size ({buffer_size}) must be at least 2 * batch_size ({2 * batch_size})"
        )
    generator = torch.Generator().manual_seed(seed)
    num_serving = buffer_size // (2 * batch_size) * batch_size
    stored: torch.Tensor | None = None
    for chunk in chunks:
        rows = torch.as_tensor(chunk, dtype=torch.float32)
        if rows.ndim != 2:
            raise ValueError(f"chunks must be [n, d] rows, got shape {tuple(rows.shape)}")
        stored = rows if stored is None else torch.cat([stored, rows])
        if stored.shape[0] >= buffer_size:
            stored = stored[torch.randperm(stored.shape[0], generator=generator)]
            serving, stored = stored[:num_serving], stored[num_serving:]
            yield from serving.split(batch_size)
    if stored is not None:
        stored = stored[torch.randperm(stored.shape[0], generator=generator)]
        for start in range(0, stored.shape[0] - batch_size + 1, batch_size):
            yield stored[start : start + batch_size]
