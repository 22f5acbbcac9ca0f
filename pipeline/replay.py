"""Replaying a store's windows through its model: the windows of a unit, right-padded
batches of them, and stored rows as torch tensors.

Shared by the intervention worker and the SAE evaluation (`pipeline/stats/eval_replay.py`),
which both run a store's windows again, whole, exactly once each: a unit here is the set
of windows that *start* in a store unit, so windows running into the next unit are
replayed with the unit they start in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.store.reader import ActivationStore

TOKEN_COLUMNS = ["row", "doc_id", "window", "position", "token_id", "token"]


@dataclass
class Batch:
    ids_BT: torch.Tensor
    mask_BT: torch.Tensor
    tokens: pa.Table  # the batch's real tokens in (window, position) order


def unit_windows(store: ActivationStore, unit: int) -> pa.Table:
    """Token rows of every window that starts in `unit` (windows may run into later units)."""
    start = unit * store.rows_per_unit
    stop = min(start + store.rows_per_unit, store.num_rows)
    table = store.tokens(slice(start, stop)).select(TOKEN_COLUMNS)
    starts = pc.equal(table["position"], 0)
    if not pc.any(starts).as_py():
        return table.slice(0, 0)
    first_window = pc.min(pc.filter(table["window"], starts)).as_py()
    last_window = pc.max(pc.filter(table["window"], starts)).as_py()
    tail = stop
    while tail < store.num_rows and table["window"][-1].as_py() == last_window:
        more = store.tokens(slice(tail, min(tail + store.rows_per_unit, store.num_rows)))
        table = pa.concat_tables([table, more.select(TOKEN_COLUMNS)])
        tail = min(tail + store.rows_per_unit, store.num_rows)
    windows = table["window"]
    keep = pc.and_(pc.greater_equal(windows, first_window), pc.less_equal(windows, last_window))
    return table.filter(keep)


def stored_rows(store: ActivationStore, layer: str, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a store array as float32 torch (bfloat16 bits widened by torch)."""
    raw = store.activations(layer)[start:stop]
    if store.meta["hooks"][layer]["logical_dtype"] == "bfloat16":
        return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(raw).float()


def batches(table: pa.Table, batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches of `batch_size` windows."""
    windows = table["window"].to_numpy()
    bounds = np.flatnonzero(np.diff(windows)) + 1
    starts = np.concatenate([[0], bounds]) if len(windows) else np.array([], dtype=np.int64)
    stops = np.concatenate([bounds, [len(windows)]]) if len(windows) else starts
    token_ids = table["token_id"].to_numpy().astype(np.int64)
    result = []
    for first in range(0, len(starts), batch_size):
        spans = list(
            zip(starts[first : first + batch_size], stops[first : first + batch_size], strict=True)
        )
        width = max(b - a for a, b in spans)
        ids_BT = torch.full((len(spans), width), pad_id, dtype=torch.long)
        mask_BT = torch.zeros((len(spans), width), dtype=torch.long)
        for row, (a, b) in enumerate(spans):
            ids_BT[row, : b - a] = torch.from_numpy(token_ids[a:b])
            mask_BT[row, : b - a] = 1
        tokens = table.slice(int(spans[0][0]), int(spans[-1][1] - spans[0][0]))
        result.append(Batch(ids_BT, mask_BT, tokens))
    return result
