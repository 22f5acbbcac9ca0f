"""Run units of work on a pool of Ray actors: keep each busy, replace the dead, retry.

Shared by capture and interventions. An actor here is anything with remote methods
`ready()` (returns once its model is loaded) and `process(unit, attempt)`; its results
are small dicts (commit manifests), never activations. Exactly-once output is the
store's job (commit records), so running a unit twice must be harmless: this loop only
guarantees every unit runs to success at least once or the job fails naming the unit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import ray
from ray.exceptions import RayActorError

from pipeline.distributed.scheduler import UnitQueue


def check_actor_resources(num_cpus: float, num_gpus: float) -> None:
    """Fail at once, not hang, when the cluster cannot host even one actor."""
    resources = ray.cluster_resources()
    if num_gpus > 0 and resources.get("GPU", 0) < num_gpus:
        raise ValueError(
            f"num_gpus_per_worker={num_gpus} but the Ray cluster has "
            f"{resources.get('GPU', 0):g} GPUs; set num_gpus_per_worker=0 and device=cpu, or add GPU nodes"
        )
    if resources.get("CPU", 0) < num_cpus:
        raise ValueError(
            f"num_cpus_per_worker={num_cpus} but the Ray cluster has "
            f"{resources.get('CPU', 0):g} CPUs; lower num_cpus_per_worker"
        )


def run_units_on_actors(
    start_actor: Callable[[str], object],
    units: list[int],
    *,
    num_actors: int,
    in_flight_per_actor: int,
    max_retries: int,
    on_done: Callable[[int, dict], None] | None = None,
) -> float:
    """Run every unit; returns the seconds from all actors ready to the last result.

    `start_actor(worker_id)` starts one actor. `on_done(unit, result)` is called on the
    driver as each unit succeeds. Raises `UnitFailedError` when a unit exhausts its retries.
    """
    queue = UnitQueue(list(units), max_retries)
    num_actors = min(num_actors, max(len(units), 1))
    actors = {i: start_actor(f"w{i}") for i in range(num_actors)}
    generation = {i: 0 for i in actors}
    queued: dict[int, deque] = {i: deque() for i in actors}  # refs per actor, oldest first
    in_flight: dict = {}  # ref -> (actor index, unit, attempt)

    def submit(index: int) -> None:
        while len(queued[index]) < in_flight_per_actor:
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
        actors[index] = start_actor(f"w{index}.{generation[index]}")

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
                result = ray.get(ref)
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
                if on_done is not None:
                    on_done(unit, result)
            submit(index)
        return time.perf_counter() - began
    finally:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
