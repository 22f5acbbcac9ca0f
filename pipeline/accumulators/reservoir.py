"""A uniform sample of token rows, bounded and mergeable (bottom-k over hashed keys)."""

from __future__ import annotations

import torch

from pipeline.accumulators.common import (
    ArrayLike,
    rank_order,
    require_positive,
    row_ids,
    to_cpu,
    uniform_keys,
)


class ReservoirSample:
    """Uniform sample without replacement of up to ``capacity`` token rows from a stream.

    Each row gets a key in [0, 1) hashed from (``seed``, row id); the sample is the
    ``capacity`` rows with the largest keys (bottom-k sampling), so every subset of that size
    is equally likely and the merge of two samples is the top keys of their union.

    For a merged sample to be uniform, (seed, row id) must be unique across the streams: pass
    global row ids (then the sample is the same however the stream was split), or give each
    actor its own seed. Without ``row_ids_N``, ids count rows seen by this accumulator
    (``num_seen`` onward), which repeat across actors.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        require_positive("capacity", capacity)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.capacity = capacity
        self.seed = seed
        self.num_seen = 0
        self._keys_M = torch.empty(0, dtype=torch.float64)
        self._ids_M = torch.empty(0, dtype=torch.long)
        self._rows_MD: torch.Tensor | None = None  # dtype and width fixed by the first update

    def update(self, rows_ND: ArrayLike, row_ids_N: ArrayLike | None = None) -> None:
        """Offer every row of ``rows_ND``; rows are cast to the dtype of the first batch."""
        rows = to_cpu("rows_ND", rows_ND)
        num_rows = rows.shape[0]
        if self._rows_MD is None:
            self._rows_MD = rows.new_empty((0, rows.shape[1]))
        elif rows.shape[1] != self._rows_MD.shape[1]:
            raise ValueError(
                f"rows_ND has {rows.shape[1]} columns, expected {self._rows_MD.shape[1]}"
            )
        if row_ids_N is None:
            ids_N = torch.arange(self.num_seen, self.num_seen + num_rows)
        else:
            ids_N = row_ids(row_ids_N, num_rows)
        self.num_seen += num_rows
        keys_N = uniform_keys(self.seed, ids_N)
        full = self._keys_M.shape[0] == self.capacity
        if num_rows == 0 or (full and keys_N.max() < self._keys_M.min()):
            return  # nothing can enter: the common case once the reservoir is full
        self._keep_top(
            torch.cat([self._keys_M, keys_N]),
            torch.cat([self._ids_M, ids_N]),
            torch.cat([self._rows_MD, rows.to(self._rows_MD.dtype)]),
        )

    def _keep_top(self, keys: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> None:
        keep = rank_order(keys, ids)[: self.capacity]
        self._keys_M, self._ids_M, self._rows_MD = keys[keep], ids[keep], rows[keep]

    def rows(self) -> torch.Tensor:
        """Sampled rows [M, D], M = min(capacity, num_seen), in the order of ``row_ids``."""
        return self._rows_MD.clone() if self._rows_MD is not None else torch.empty(0, 0)

    def row_ids(self) -> torch.Tensor:
        """Row ids [M] (int64) of the sampled rows."""
        return self._ids_M.clone()

    def merge(self, other: ReservoirSample) -> ReservoirSample:
        """New sample of the union of both streams (keeps self's ``seed`` for later updates)."""
        if other.capacity != self.capacity:
            raise ValueError(
                f"other.capacity={other.capacity} differs from capacity={self.capacity}"
            )
        out = ReservoirSample(self.capacity, self.seed)
        out.num_seen = self.num_seen + other.num_seen
        parts = [p._rows_MD for p in (self, other) if p._rows_MD is not None]
        if not parts:
            return out
        if parts[-1].shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"other rows have {parts[-1].shape[1]} columns, expected {parts[0].shape[1]}"
            )
        out._keep_top(
            torch.cat([self._keys_M, other._keys_M]),
            torch.cat([self._ids_M, other._ids_M]),
            torch.cat([p.to(parts[0].dtype) for p in parts]),
        )
        return out
