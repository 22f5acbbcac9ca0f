"""SAE feature statistics on Ray: one task per group of units, merged at the driver.

Partials are small (latents x top_k), so they travel through the object store; the
activations are read by each task from the shared store, never shipped.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import ray

from pipeline.distributed.driver import ensure_ray
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
) -> FeatureStats:
    """The same statistics as `sae_feature_stats`, with the units spread over Ray tasks."""
    units = ActivationStore.open(store_path, partial).data_units()  # refuses unfinished
    ensure_ray()
    num_tasks = num_tasks or max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1)) * 2))
    bounds = [len(units) * i // num_tasks for i in range(num_tasks + 1)]
    task = ray.remote(stats_for_units).options(num_cpus=0.5)
    refs = [
        task.remote(str(store_path), hook, str(sae_dir), units[a:b], top_k, partial)
        for a, b in zip(bounds, bounds[1:], strict=False)
        if b > a
    ]
    return reduce(FeatureStats.merge, ray.get(refs))
