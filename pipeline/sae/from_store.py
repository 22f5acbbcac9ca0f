"""Training an SAE on one hook of an activation store (`pipeline.store.reader`).

Kept apart from the trainer so the trainer needs nothing but an iterator of rows; this is
the only SAE module that reads stores.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.sae.trainer import SaeTrainer, TrainerConfig, checkpoint_step, train_sae
from pipeline.store.reader import ActivationStore


def store_chunks(
    store, hook: str, chunk_rows: int = 65_536, skip_rows: int = 0
) -> Iterator[np.ndarray]:
    """float32 row chunks [<= chunk_rows, D] of one hook, pass after pass over the store.

    Starts `skip_rows` rows in (modulo the store's size), so a resumed run continues
    where the data stream of the first one was.
    """
    num_rows = store.num_rows
    if num_rows < 1:
        raise ValueError(f"the store at {store.root} has no rows")
    start = skip_rows % num_rows
    while True:
        while start < num_rows:
            stop = min(start + chunk_rows, num_rows)
            yield store.read(hook, slice(start, stop))
            start = stop
        start = 0


def train_sae_from_store(
    store_path: str | Path,
    hook: str,
    config: TrainerConfig,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> SaeTrainer:
    """`train_sae` on one hook's rows of an activation store (read with `ActivationStore`)."""
    store = ActivationStore.open(store_path)
    if hook not in store.hooks:
        close = difflib.get_close_matches(hook, store.hooks, n=5, cutoff=0.3)
        hint = (
            f"closest: {', '.join(close)}" if close else f"the store has: {', '.join(store.hooks)}"
        )
        raise ValueError(f"hook {hook!r} is not in the store at {store_path}; {hint}")
    skip_rows = checkpoint_step(resume) * config.batch_size if resume is not None else 0
    chunks = store_chunks(
        store, hook, chunk_rows=max(config.batch_size, config.buffer_size // 4), skip_rows=skip_rows
    )
    return train_sae(
        chunks,
        config,
        n_inputs=store.d(hook),
        out_dir=out_dir,
        resume=resume,
        progress=progress,
        device=device,
    )
