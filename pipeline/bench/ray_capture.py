"""Capture on Ray vs a bare forward pass, and two actors vs one (issue 4).

MiniLM on the embedded corpus, hooks layer_1/3/5 (the defaults). Baseline: a bare forward
pass truncated after layer_5 with one torch thread, in this process, over the same batches
the actors run. Actor throughput is rows / wall time of the driver's unit loop, counted
once every actor has loaded its model. Targets: one actor >= 0.95 of the baseline; two
actors >= 1.6x one actor on this 2-core machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from pipeline.bench.capture import unit_batches
from pipeline.bench.timing import markdown_table
from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import deepest_hook
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.worker import UnitWorker


def bare_tokens_per_s(config: CaptureConfig, rounds: int) -> float:
    prepared = prepare_capture(config)
    worker = UnitWorker(config, prepared.out, lm=prepared.lm)
    plan, lm = prepared.writer, prepared.lm
    stop = deepest_hook(lm, config.hooks)
    batches = unit_batches(worker)
    best = []
    for _ in range(rounds):
        began = time.perf_counter()
        for ids, mask in batches:
            lm.inference.forward_ids(ids, mask, stop_after=stop)
        best.append(time.perf_counter() - began)
    return plan.num_rows / sorted(best)[len(best) // 2]


def run(
    rounds: int = 3, threads: int | None = None, device: str = "cpu", max_tokens: int = 32768
) -> str:
    import ray

    from pipeline.distributed import run_capture
    from pipeline.distributed.local_ray import start_local_ray

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = CaptureConfig(
            max_tokens=max_tokens,
            rows_per_unit=2048,
            torch_threads=1,
            num_cpus_per_worker=1,
            out=str(Path(tmp) / "bare"),
        )
        bare = bare_tokens_per_s(base, rounds)
        rows.append(["bare forward truncated after layer_5, 1 thread", bare, 1.0])
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            results = {}
            for workers in (1, 2, 1, 2):
                config = CaptureConfig(
                    **{
                        **base.__dict__,
                        "num_workers": workers,
                        "out": str(Path(tmp) / f"ray{workers}-{time.time()}"),
                    }
                )
                result = run_capture(config, progress=False)
                results.setdefault(workers, []).append(result.num_rows / result.compute_s)
        finally:
            ray.shutdown()
    one, two = max(results[1]), max(results[2])
    rows.append(["Ray, 1 actor x 1 thread", one, one / bare])
    rows.append(["Ray, 2 actors x 1 thread", two, two / bare])
    table = markdown_table(["case", "tokens/s", "vs bare"], rows)
    return f"{table}\n\ntwo actors / one actor: {two / one:.2f}x (best of 2 runs each, {max_tokens} tokens)"
