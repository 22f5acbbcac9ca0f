"""Capture on Ray vs a bare forward pass, and two actors vs one (issue 4).

MiniLM on the embedded corpus, hooks layer_1/3/5 (the defaults). Baseline: a bare forward
pass truncated after layer_5 with one torch thread, in this process, over the same batches
the actors run. Actor throughput is rows / wall time of the driver's unit loop, counted
once every actor has loaded its model. Targets: one actor >= 0.95 of the baseline; two
actors >= 1.6x one actor on this 2-core machine.

Every case reports the same statistic, the median of `rounds` runs, and the runs are
interleaved (bare, 1 actor, 2 actors, bare, ...) with the Ray cluster up throughout, so a
slow minute of the machine and the cluster's idle daemons weigh on all sides alike.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.capture import unit_batches
from benchmarks.timing import markdown_table
from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import deepest_hook
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.worker import UnitWorker
from pipeline.ray_config import RayConfig

BARE = "bare forward truncated after layer_5, 1 thread"
ACTORS = {1: "Ray, 1 actor x 1 thread", 2: "Ray, 2 actors x 1 thread"}


def bare_round(config: CaptureConfig) -> Callable[[], float]:
    """A callable that runs the bare forward over every batch once and returns tokens/s."""
    prepared = prepare_capture(config)
    worker = UnitWorker(config, prepared.out, lm=prepared.lm)
    lm, num_rows = prepared.lm, prepared.writer.num_rows
    stop = deepest_hook(lm, config.hooks)
    batches = unit_batches(worker)

    def once() -> float:
        began = time.perf_counter()
        for ids, mask in batches:
            lm.inference.forward_ids(ids, mask, stop_after=stop)
        return num_rows / (time.perf_counter() - began)

    return once


def run(
    rounds: int = 3, threads: int | None = None, device: str = "cpu", max_tokens: int = 32768
) -> str:
    import ray

    from pipeline.distributed import run_capture
    from pipeline.distributed.local_ray import start_local_ray

    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {name: [] for name in (BARE, *ACTORS.values())}
    with tempfile.TemporaryDirectory() as tmp:
        base = CaptureConfig(
            max_tokens=max_tokens,
            rows_per_unit=2048,
            torch_threads=1,
            out=str(Path(tmp) / "bare"),
        )
        bare = bare_round(base)
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for round_index in range(rounds):
                rates[BARE].append(bare())
                for workers, name in ACTORS.items():
                    out = str(Path(tmp) / f"ray{workers}-{round_index}")
                    config = dataclasses.replace(base, out=out)
                    ray_config = RayConfig(num_workers=workers, num_cpus_per_worker=1)
                    result = run_capture(config, ray_config, progress=False)
                    rates[name].append(result.num_rows / result.compute_s)
        finally:
            ray.shutdown()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rows = [[name, rate, rate / medians[BARE]] for name, rate in medians.items()]
    table = markdown_table(["case", "tokens/s", "vs bare"], rows)
    one, two = medians[ACTORS[1]], medians[ACTORS[2]]
    return (
        f"{table}\n\ntwo actors / one actor: {two / one:.2f}x (median of {rounds} interleaved "
        f"rounds per case, {max_tokens} tokens)"
    )
