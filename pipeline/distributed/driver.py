"""The Ray driver: plan once, keep every actor busy, replace the dead, finalize once.

Exactly-once output comes from the store's commit protocol, not from Ray: the driver
runs units at least once (re-queuing those whose actor died or whose write failed) and a
unit's commit record makes a second run of it a harmless rewrite of the same bytes. A
killed driver loses only in-flight work; rerunning the same command computes the units
that have no commit record.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import model_path
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.run import CaptureResult, finish, progress_meter
from pipeline.distributed.actors import start_actor
from pipeline.distributed.local_ray import ensure_ray
from pipeline.distributed.planning import ray_planner
from pipeline.distributed.pool import ActorPool, check_actor_resources
from pipeline.ray_config import RayConfig


def check_resources(ray_config: RayConfig) -> None:
    """Fail at once, not hang, when the cluster cannot host even one actor."""
    check_actor_resources(ray_config.num_cpus_per_worker, ray_config.num_gpus_per_worker)


def run_capture(
    config: CaptureConfig,
    ray_config: RayConfig | None = None,
    *,
    progress: bool = True,
    command: str | None = None,
) -> CaptureResult:
    """Capture on Ray: `ray_config.num_workers` actors, each hosting one model replica.

    `ray_config`: how the work is spread over actors (None: `RayConfig()`'s defaults).
    `command`: the shell command that reruns this capture (recorded in the store)."""
    if ray_config is None:
        ray_config = RayConfig()
    if not isinstance(ray_config, RayConfig):
        raise TypeError(f"ray_config must be a RayConfig, got {type(ray_config).__name__}")
    ensure_ray()
    check_resources(ray_config)
    # The driver only checks hooks and widths and plans (in tasks); it may have no GPU.
    probe_config = replace(config, device="cpu")
    prepared = prepare_capture(
        probe_config,
        # The model as given (a URL stays a URL): each node resolves its own cached copy.
        planner=ray_planner(config.model or model_path(probe_config)),
        command=command,
    )
    writer, store_path = prepared.writer, str(prepared.out)
    config = replace(config, hooks=prepared.config.hooks)  # integer hooks named
    del prepared  # the driver's model copy is no longer needed
    pending = writer.pending_units()
    meter = progress_meter(writer, pending) if progress else None

    def advance(unit: int, _result: dict) -> None:
        if meter is not None:
            start, stop = writer.index.unit_rows(unit)
            meter.advance(stop - start)

    try:
        pool = ActorPool(
            lambda worker_id: start_actor(config, ray_config, store_path, worker_id),
            num_actors=ray_config.num_workers,
            in_flight_per_actor=ray_config.units_in_flight_per_worker,
        )
        compute_s = pool.run(pending, ray_config.max_retries, on_done=advance)
    finally:
        if meter is not None:
            meter.close()
    return finish(writer, pending, compute_s)
