"""SAE feature statistics on Ray: one task per group of units, merged at the driver.

Partials are small (latents x (top_k + samples + histogram bins)), so they travel through the object store; the
activations are read by each task from the shared store, never shipped.
"""

from __future__ import annotations

from pathlib import Path

import ray

from pipeline.distributed.local_ray import ensure_ray
from pipeline.distributed.merge import merge_in_order
from pipeline.stats.features import FeatureStats
from pipeline.stats.sae_stats import stats_for_units
from pipeline.store.reader import ActivationStore


def sae_feature_stats_on_ray(
    store_path: str | Path,
    hook: str,
    sae_dir: str | Path,
    top_k: int = 10,
    num_tasks: int | None = None,
    partial: bool = False,
    progress: bool = False,
    samples: int = 20,
) -> FeatureStats:
    """The same statistics as `sae_feature_stats`, with the units spread over Ray tasks."""
    store = ActivationStore.open(store_path, partial)
    units = store.data_units()  # refuses an unfinished store
    ensure_ray()
    num_tasks = num_tasks or max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1)) * 2))
    bounds = [len(units) * i // num_tasks for i in range(num_tasks + 1)]
    task = ray.remote(stats_for_units).options(num_cpus=0.5)
    groups = [units[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    refs = [
        task.remote(str(store_path), hook, str(sae_dir), g, top_k, partial, None, samples)
        for g in groups
    ]
    rows = [
        sum(store.index.unit_rows(u)[1] - store.index.unit_rows(u)[0] for u in g) for g in groups
    ]
    return merge_in_order(refs, rows, FeatureStats.merge, progress)
