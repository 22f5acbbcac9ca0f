"""SAE evaluation on Ray: one task per group of units, partial sums merged at the driver.

Each task reads its units' activations from the shared store and, for the units to
replay, loads the store's model once; only the partial sums (O(latents)) come back.
Partials are merged in task order, so the float sums are the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import ray

from pipeline.distributed.local_ray import ensure_ray
from pipeline.distributed.merge import merge_in_order
from pipeline.stats.eval import EvalSums
from pipeline.stats.eval_replay import eval_units, plan_units
from pipeline.store.reader import ActivationStore


def evaluate_sae_on_ray(
    store_path: str | Path,
    hook: str,
    sae_dir: str | Path,
    max_units: int | None = None,
    partial: bool = False,
    num_tasks: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> EvalSums:
    """The same sums as `evaluate_sae`, with the units spread over Ray tasks (on CPU)."""
    units, replay = plan_units(store_path, partial, max_units)  # refuses an unfinished store
    ensure_ray()
    num_tasks = num_tasks or max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1))))
    bounds = [len(units) * i // num_tasks for i in range(num_tasks + 1)]
    groups = [units[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    task = ray.remote(eval_units).options(num_cpus=1)
    refs = [
        task.remote(
            str(store_path),
            hook,
            str(sae_dir),
            group,
            [u for u in group if u in replay],
            partial,
            "cpu",
            batch_size,
        )
        for group in groups
    ]
    store = ActivationStore.open(store_path, partial)
    rows = [
        sum(store.index.unit_rows(u)[1] - store.index.unit_rows(u)[0] for u in g) for g in groups
    ]
    return merge_in_order(refs, rows, EvalSums.merge, progress)
