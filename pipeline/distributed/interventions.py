"""Interventions on Ray: one actor per model replica, units spread by the shared pool.

The driver prepares once (checks, fingerprint, means), the actors replay units and
commit their effects straight to the shared output folder, and the driver writes the
summary from the small commit records. A rerun after any crash finishes the same run.
"""

from __future__ import annotations

import itertools
import os

import ray

from pipeline import faults
from pipeline.distributed.local_ray import ensure_ray
from pipeline.distributed.pool import ActorPool, check_actor_resources
from pipeline.interventions.prepare import PreparedRun, prepare_run
from pipeline.interventions.run import InterventionResult, finish_run
from pipeline.interventions.spec import InterventionSpec


class InterventionActor:
    def __init__(self, run: PreparedRun, worker_id: str):
        from pipeline.interventions.worker import InterventionWorker

        self.worker = InterventionWorker(run, worker_id=worker_id)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.worker.lm.device)}

    def process(self, unit: int, attempt: int) -> dict:
        record = self.worker.process(unit, attempt=attempt)
        return {"unit": unit, "rows": record["effects"]["rows"], "timing": record["timing"]}


def run_interventions_on_ray(
    spec: InterventionSpec, progress: bool = True, verify: bool = False
) -> InterventionResult:
    """Run `spec` on Ray actors. `verify`: check committed effects files' sha256 first."""
    ensure_ray()
    check_actor_resources(spec.ray.num_cpus_per_worker, spec.ray.num_gpus_per_worker)
    run = prepare_run(spec, verify=verify)
    run_ref = ray.put(run)
    options = {
        "num_cpus": spec.ray.num_cpus_per_worker,
        "num_gpus": spec.ray.num_gpus_per_worker,
        "max_restarts": 0,
        "max_concurrency": 1,
        **faults.ray_options(),
    }
    remote_actor = ray.remote(InterventionActor).options(**options)
    finished = itertools.count(1)

    def report(unit: int, result: dict) -> None:
        index = next(finished)
        if progress:
            print(f"unit {unit} done ({index}/{len(run.pending)})", flush=True)

    pool = ActorPool(
        lambda worker_id: remote_actor.remote(run_ref, worker_id),
        num_actors=spec.ray.num_workers,
        in_flight_per_actor=1,
    )
    pool.run(list(run.pending), spec.ray.max_retries, on_done=report)
    return finish_run(run)
