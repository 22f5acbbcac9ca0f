"""The capture actor: a `UnitWorker` (one model replica) inside a Ray actor.

Only manifests (small dicts) come back through Ray; the activations go from the worker's
device straight into the store on shared disk.
"""

from __future__ import annotations

import os

import ray

from pipeline import faults
from pipeline.capture.config import CaptureConfig
from pipeline.capture.worker import UnitWorker
from pipeline.ray_config import RayConfig


class CaptureActor:
    def __init__(self, config: CaptureConfig, store_path: str, worker_id: str):
        # The actor reads each unit's windows from the store: it never holds the plan.
        self.worker = UnitWorker(config, store_path, worker_id=worker_id)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.worker.lm.device)}

    def process(self, unit: int, attempt: int) -> dict:
        record = self.worker.process(unit, attempt=attempt)
        return {
            "unit": unit,
            "rows": [record["row_start"], record["row_stop"]],
            "timing": record["timing"],
            "attempt": attempt,
        }


def start_actor(config: CaptureConfig, ray_config: RayConfig, store_path: str, worker_id: str):
    """One actor with `ray_config`'s resources; it loads its model replica on start."""
    options = {
        "num_cpus": ray_config.num_cpus_per_worker,
        "num_gpus": ray_config.num_gpus_per_worker,
        "max_restarts": 0,
        "max_concurrency": 1,
        "name": None,
        **faults.ray_options(),
    }
    return ray.remote(CaptureActor).options(**options).remote(config, store_path, worker_id)
