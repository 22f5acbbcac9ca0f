"""SAE feature statistics: one process against Ray tasks over the same store.

The statistics are a map over store units (encode, count, keep top examples) and an
associative merge, so they should scale with workers like capture does. Baseline: the
whole map in this process with one torch thread. Cases: Ray with one task per CPU, each
with one thread, reading the store from disk itself. Ray's workers are warm after the
untimed first round (imports and the SAE load are not what is measured).

Store: MiniLM layer_3 over 16 units of 4096 rows of the embedded corpus; SAE: TopK,
1536 latents, k=32, random weights (speed does not depend on training).
Target (ours, like capture's): 2 tasks >= 1.6x one process on 2 cores.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import interleaved, markdown_table
from pipeline.capture import CaptureConfig, capture
from pipeline.sae import TopKSae
from pipeline.stats.sae_stats import sae_feature_stats


def run(rounds: int = 3, threads: int | None = None, device: str = "cpu") -> str:
    import ray

    from pipeline.distributed.local_ray import start_local_ray
    from pipeline.distributed.stats import sae_feature_stats_on_ray

    torch.set_num_threads(1)
    units, rows_per_unit = 16, 4096
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        capture(
            CaptureConfig(
                hooks=("layer_3",),
                dtype="float16",
                max_tokens=units * rows_per_unit,
                rows_per_unit=rows_per_unit,
                out=str(work / "store"),
            ),
            progress=False,
        )
        torch.manual_seed(0)
        TopKSae(n_latents=1536, n_inputs=384, k=32).save(work / "sae")
        store, sae = str(work / "store"), str(work / "sae")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        num_cpus = os.cpu_count() or 2
        start_local_ray(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            cases = {
                "one process, 1 thread": lambda: sae_feature_stats(store, "layer_3", sae),
                f"Ray, {num_cpus} tasks x 1 thread": lambda: sae_feature_stats_on_ray(
                    store, "layer_3", sae, num_tasks=num_cpus
                ),
            }
            timings = interleaved(cases, rounds=rounds)
        finally:
            ray.shutdown()
    tokens = units * rows_per_unit
    base = timings["one process, 1 thread"].median
    rows = [[name, tokens / t.median, base / t.median] for name, t in timings.items()]
    return (
        f"MiniLM layer_3, {tokens} rows, TopK SAE 1536 latents k=32, {num_cpus} CPUs\n\n"
        + markdown_table(["case", "rows/s", "speed-up"], rows)
    )
