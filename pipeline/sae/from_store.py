"""Training an SAE on one hook of an activation store (`pipeline.store.reader`).

Kept apart from the trainer so the trainer needs nothing but an iterator of rows; this is
the only SAE module that reads stores.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.sae.base import Sae
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, checkpoint_step, train_sae
from pipeline.store.location import require_bucket, resolve
from pipeline.store.location import store_path as location
from pipeline.store.output_dir import OutputFolderError, claim_output_dir
from pipeline.store.reader import ActivationStore

TRAINING_OUTPUTS = ("checkpoints", "metrics.jsonl", "sae", "checkpoint_evals.jsonl")
MAX_PASSES = 10  # more passes over the same rows than this earns a warning


def store_provenance(store: ActivationStore, hook: str) -> dict:
    """What a trained SAE's `cfg.json` metadata says about the rows it learned from."""
    fingerprint = store.meta.get("fingerprint") or {}
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    provenance = {
        "model": fingerprint.get("model"),
        "hook": hook,
        "store": resolve(store.root),
        "store_plan_fingerprint": store.meta.get("plan_fingerprint"),
        "store_fingerprint_sha256": digest,
    }
    resolved = (fingerprint.get("hooks_resolved") or {}).get(hook)
    if resolved is not None:
        provenance["hook_resolved"] = resolved
    return provenance


def passes_warning(steps: int, batch_size: int, num_rows: int) -> str | None:
    """One line when `steps * batch_size` reads the `num_rows` rows over MAX_PASSES times."""
    passes = steps * batch_size / max(num_rows, 1)
    if passes <= MAX_PASSES:
        return None
    return (
        f"warning: training makes {passes:.1f} passes over the store's {num_rows:,} rows "
        f"({steps:,} steps x batch size {batch_size:,} = {steps * batch_size:,} rows; more "
        f"than {MAX_PASSES} passes may overfit them): capture more rows or train fewer steps"
    )


def claim_training_output(out: Path, resume: str | Path | None, overwrite: bool) -> None:
    """Refuse an output folder that would mix two runs or hold someone else's files."""
    if resume is not None and overwrite:
        raise OutputFolderError(
            "train_sae: --resume continues the run in --out and --overwrite deletes it; "
            "pass one of them"
        )
    if claim_output_dir(out, TRAINING_OUTPUTS, "train_sae", overwrite) and resume is None:
        raise OutputFolderError(
            f"train_sae: {out} already holds a training run (checkpoints, metrics, SAE); "
            f"pass --resume {out}/checkpoints/step_N to continue it, --overwrite to replace "
            "it, or choose another --out"
        )


def store_chunks(
    store, hook: str, chunk_rows: int = 65_536, skip_rows: int = 0
) -> Iterator[np.ndarray]:
    """float32 row chunks [<= chunk_rows, D] of one hook, pass after pass over the store.

    Reads only rows that hold data (`store.data_row_runs()`: all rows of a finished store,
    the committed units' rows of a partial one). Starts `skip_rows` rows into that stream
    (modulo its size), so a resumed run continues where the first one's data stream was.
    """
    runs = store.data_row_runs()
    num_rows = sum(stop - start for start, stop in runs)
    if num_rows < 1:
        raise ValueError(f"the store at {store.root} has no rows to train on")
    skip = skip_rows % num_rows
    while True:
        for run_start, run_stop in runs:
            start = run_start + min(skip, run_stop - run_start)
            skip -= start - run_start
            while start < run_stop:
                stop = min(start + chunk_rows, run_stop)
                yield store.read(hook, slice(start, stop))
                start = stop


def train_sae_from_store(
    store_path: str | Path,
    hook: str,
    config: TrainerConfig,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    partial: bool = False,
    overwrite: bool = False,
    on_checkpoint: Callable[[int, Sae], None] | None = None,
) -> SaeTrainer:
    """`train_sae` on one hook's rows of an activation store (read with `ActivationStore`).

    `on_checkpoint(step, sae)` runs after every checkpoint (`jobs.train_sae --eval-units`
    passes the evaluation of `pipeline/stats/checkpoint_eval.py`: the SAE spliced into the
    store's model, logged to OUT/checkpoint_evals.jsonl).

    An unfinished store is refused unless `partial` (then: its committed units' rows only).
    `out_dir` must be new, empty, or hold this kind of run: an earlier run there is
    continued only with `resume`, replaced only with `overwrite`; anything else is refused
    before training starts.
    """
    store = ActivationStore.open(store_path, partial)
    store.data_units()  # an unfinished store is refused here, before anything is written
    if hook not in store.hooks:
        close = difflib.get_close_matches(hook, store.hooks, n=5, cutoff=0.3)
        hint = (
            f"closest: {', '.join(close)}" if close else f"the store has: {', '.join(store.hooks)}"
        )
        raise ValueError(f"hook {hook!r} is not in the store at {store_path}; {hint}")
    if out_dir is not None:  # last of the checks: --overwrite deletes the earlier run
        require_bucket(location(out_dir), "the training run")
        claim_training_output(location(out_dir), resume, overwrite)
    num_rows = sum(stop - start for start, stop in store.data_row_runs())
    warning = passes_warning(config.steps, config.batch_size, num_rows)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
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
        metadata=store_provenance(store, hook),
        on_checkpoint=on_checkpoint,
    )
