"""The Ray driver: plan once, keep every actor busy, replace the dead, finalize once.

Exactly-once output comes from the store's commit protocol, not from Ray: the driver
runs units at least once (re-queuing those whose actor died or whose write failed) and a
unit's commit record makes a second run of it a harmless rewrite of the same bytes. A
killed driver loses only in-flight work; rerunning the same command computes the units
that have no commit record.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import replace

import ray
from ray.exceptions import RayActorError

from pipeline.capture.config import CaptureConfig
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.run import CaptureResult, finish, progress_meter
from pipeline.distributed.actors import start_actor
from pipeline.distributed.planning import plan_in_parallel
from pipeline.distributed.scheduler import UnitQueue


def ensure_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (set inside `ray job submit`), else start one."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)


def check_resources(config: CaptureConfig) -> None:
    """Fail at once, not hang, when the cluster cannot host even one actor."""
    resources = ray.cluster_resources()
    if config.num_gpus_per_worker > 0 and resources.get("GPU", 0) < config.num_gpus_per_worker:
        raise ValueError(
            f"num_gpus_per_worker={config.num_gpus_per_worker} but the Ray cluster has "
            f"{resources.get('GPU', 0):g} GPUs; set num_gpus_per_worker=0 and device=cpu, or add GPU nodes"
        )
    if resources.get("CPU", 0) < config.num_cpus_per_worker:
        raise ValueError(
            f"num_cpus_per_worker={config.num_cpus_per_worker} but the Ray cluster has "
            f"{resources.get('CPU', 0):g} CPUs; lower num_cpus_per_worker"
        )


def run_capture(config: CaptureConfig, progress: bool = True) -> CaptureResult:
    """Capture on Ray: `config.num_workers` actors, each hosting one model replica."""
    ensure_ray()
    check_resources(config)
    # The driver only checks hooks and widths and plans; it may have no GPU.
    probe_config = replace(config, device="cpu")
    plan = plan_in_parallel(probe_config)
    prepared = prepare_capture(probe_config, plan=plan)
    writer, plan, store_path = prepared.writer, prepared.plan, str(prepared.out)
    del prepared  # the driver's model copy is no longer needed
    pending = writer.pending_units()
    meter = progress_meter(plan, pending) if progress else None

    queue = UnitQueue(pending, config.max_retries)
    plan_ref = ray.put(plan)
    num_actors = min(config.num_workers, max(len(pending), 1))
    actors = {i: start_actor(config, store_path, plan_ref, f"w{i}") for i in range(num_actors)}
    generation = {i: 0 for i in actors}
    queued: dict[int, deque] = {i: deque() for i in actors}  # refs per actor, oldest first
    in_flight: dict = {}  # ref -> (actor index, unit, attempt)

    def submit(index: int) -> None:
        while len(queued[index]) < config.units_in_flight_per_worker:
            item = queue.next_unit()
            if item is None:
                return
            unit, attempt = item
            ref = actors[index].process.remote(unit, attempt)
            in_flight[ref] = (index, unit, attempt)
            queued[index].append(ref)

    def replace_actor(index: int, error: Exception) -> None:
        """The actor died: its oldest unit spends a retry, the ones queued behind it do not."""
        for position, ref in enumerate(list(queued[index])):
            _, unit, _ = in_flight.pop(ref)
            queue.failed(
                unit, f"actor w{index} died: {type(error).__name__}: {error}", counts=position == 0
            )
        queued[index].clear()
        ray.kill(actors[index], no_restart=True)
        generation[index] += 1
        actors[index] = start_actor(config, store_path, plan_ref, f"w{index}.{generation[index]}")

    try:
        ray.get([actor.ready.remote() for actor in actors.values()])  # models loaded
        began = time.perf_counter()
        for index in actors:
            submit(index)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            index, unit, _ = in_flight[ref]
            try:
                ray.get(ref)
            except RayActorError as error:
                replace_actor(index, error)
            except Exception as error:  # the unit raised inside a live actor
                in_flight.pop(ref)
                queued[index].remove(ref)
                cause = getattr(error, "cause", None) or error
                queue.failed(unit, f"attempt on w{index}: {type(cause).__name__}: {cause}")
            else:
                in_flight.pop(ref)
                queued[index].remove(ref)
                queue.succeeded(unit)
                if meter is not None:
                    start, stop = plan.unit_rows(unit)
                    meter.advance(stop - start)
            submit(index)
        compute_s = time.perf_counter() - began
    finally:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
        if meter is not None:
            meter.close()
    return finish(writer, pending, compute_s)
