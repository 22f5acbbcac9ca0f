"""What the accumulators share: CPU copies of inputs, row ids, the total order of
top-k candidates (value, then lower row id) and the keys of uniform samples."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

NO_ID = -1  # row id of an empty top-k slot; real row ids are >= 0
ID_LAST = torch.iinfo(torch.int64).max


def require_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def to_cpu(
    name: str, x: ArrayLike, dtype: torch.dtype | None = None, ndim: int = 2
) -> torch.Tensor:
    """Detached CPU copy of ``x`` with ``ndim`` dimensions (copying so callers may reuse buffers)."""
    t = torch.as_tensor(x).detach()
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t.to("cpu", dtype=dtype if dtype is not None else t.dtype, copy=True)


def row_ids(row_ids_N: ArrayLike, num_rows: int) -> torch.Tensor:
    ids_N = to_cpu("row_ids_N", row_ids_N, ndim=1)
    if ids_N.dtype.is_floating_point or ids_N.dtype == torch.bool:
        raise ValueError(f"row_ids_N must hold integers, got dtype {ids_N.dtype}")
    if ids_N.shape[0] != num_rows:
        raise ValueError(f"row_ids_N has {ids_N.shape[0]} ids for {num_rows} rows")
    if num_rows and int(ids_N.min()) < 0:
        raise ValueError("row_ids_N must be >= 0 (-1 marks an empty top-k slot)")
    return ids_N.long()


def rank_order(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Permutation along the last axis: larger value first, then lower row id, empty slots last.

    Two stable sorts (by id, then by value) give a total order that does not depend on where
    candidates sit in the input, which is what makes merges associative.
    """
    id_key = torch.where(ids < 0, ID_LAST, ids)
    by_id = torch.sort(id_key, dim=-1, stable=True).indices
    by_value = torch.sort(values.gather(-1, by_id), dim=-1, descending=True, stable=True).indices
    return by_id.gather(-1, by_value)


def best_per_row(
    values_FC: torch.Tensor, ids_FC: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first k candidates in ``rank_order``, as ([F, k] values, [F, k] ids).

    Sorting all C candidates is slow for large batches, so torch.topk finds each row's k-th
    largest value (the threshold); every candidate above it is kept, and the places left go
    to the lowest-id candidates equal to it. Only those 2k candidates are sorted.
    """
    threshold_F1 = torch.topk(values_FC, k, dim=1).values[:, -1:]
    above = values_FC > threshold_F1
    above_values, above_pos = torch.topk(values_FC.where(above, float("-inf")), k, dim=1)
    above_ids = ids_FC.gather(1, above_pos).where(above.gather(1, above_pos), NO_ID)
    id_key_FC = torch.where(ids_FC < 0, ID_LAST, ids_FC)
    tie_key_FC = id_key_FC.where(values_FC == threshold_F1, ID_LAST)
    tie_ids = torch.topk(tie_key_FC, k, dim=1, largest=False).values
    values = torch.cat([above_values, threshold_F1.expand(-1, k)], dim=1)
    ids = torch.cat([above_ids, tie_ids.where(tie_ids != ID_LAST, NO_ID)], dim=1)
    best = rank_order(values, ids)[:, :k]
    return values.gather(1, best), ids.gather(1, best)


def uniform_keys(seed: int, row_ids: torch.Tensor) -> torch.Tensor:
    """Float64 keys in [0, 1), a pure function of (seed, row id): SplitMix64's n-th output.

    Keys derived from the row id (not drawn from a generator) make the sample independent of
    how the stream was batched or split across actors, so merging partitions equals one stream.
    """
    mask = (1 << 64) - 1
    state = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask)
    z = row_ids.numpy().astype(np.uint64)
    z = state + (z + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def reject_nan(name: str, x: torch.Tensor) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN, which has no place in a top-k ranking")
