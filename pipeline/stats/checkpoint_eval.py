"""SAE quality while training: the evaluation of `jobs.eval_sae` at every checkpoint.

Training logs reconstruction numbers (MSE, FVE, L0) on its own batches; whether the SAE
keeps what the model needs shows only when it is spliced in: CE loss recovered and KL
for causal LMs, output cosine for encoders. That costs model forwards, so it runs on the
first `units` units of the store only (the same units at every checkpoint, so the
figures are comparable over steps), and only when asked (`--eval-units`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.sae import Sae
from pipeline.stats.eval import summary_line
from pipeline.stats.eval_replay import eval_units
from pipeline.stats.provenance import checked_model_path
from pipeline.store.location import append_lines, make_folder
from pipeline.store.reader import ActivationStore

EVALS_FILE = "checkpoint_evals.jsonl"


def checkpoint_evaluator(
    store_path: str | Path,
    hook: str,
    units: int,
    out_dir: Path,
    partial: bool = False,
    device: str = "cpu",
) -> Callable[[int, Sae], None]:
    """A callback for `train_sae(on_checkpoint=...)`: evaluates the SAE on the store's
    first `units` units, appends the metrics to OUT/checkpoint_evals.jsonl and prints one
    line. The store's model is checked now, before training starts."""
    if units < 1:
        raise ValueError(f"eval units must be >= 1, got {units}")
    store = ActivationStore.open(store_path, partial)
    checked_model_path(store)
    chosen = store.data_units()[:units]

    def evaluate(step: int, sae: Sae) -> None:
        sums = eval_units(store_path, hook, sae, chosen, chosen, partial, device)
        metrics = {"step": step, "units": len(chosen), **sums.metrics()}
        for bulky in ("dead_latents", "dense_latents", "l0_histogram"):
            metrics.pop(bulky, None)
        make_folder(out_dir)
        append_lines(out_dir / EVALS_FILE, [json.dumps(metrics)])
        print(f"step {step} eval on {len(chosen)} units: {summary_line(metrics)}", file=sys.stderr)

    return evaluate
