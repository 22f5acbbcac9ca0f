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
            f"ray.num_gpus_per_worker={num_gpus} but the Ray cluster has "
            f"{resources.get('GPU', 0):g} GPUs; set ray.num_gpus_per_worker=0 and device=cpu, "
            "or add GPU nodes"
        )
    if resources.get("CPU", 0) < num_cpus:
        raise ValueError(
            f"ray.num_cpus_per_worker={num_cpus} but the Ray cluster has "
            f"{resources.get('CPU', 0):g} CPUs; lower ray.num_cpus_per_worker"
        )


class ActorPool:
    """Actors kept busy on a queue of units: each holds up to `in_flight_per_actor` units;
    a dead actor is replaced (its oldest unit spends a retry, the ones queued behind it do
    not); a unit that raises is retried on any actor until `max_retries` is spent.

    `start_actor(worker_id)` starts one actor; replacements get ids `wN.G` (generation G).
    """

    def __init__(
        self,
        start_actor: Callable[[str], object],
        num_actors: int,
        in_flight_per_actor: int,
    ):
        self.start_actor = start_actor
        self.num_actors = num_actors
        self.in_flight_per_actor = in_flight_per_actor
        self.actors: dict[int, object] = {}
        self.generation: dict[int, int] = {}
        self.queued: dict[int, deque] = {}  # refs per actor, oldest first
        self.in_flight: dict = {}  # ref -> (actor index, unit, attempt)
        self.queue: UnitQueue | None = None

    def run(
        self,
        units: list[int],
        max_retries: int,
        on_done: Callable[[int, dict], None] | None = None,
    ) -> float:
        """Run every unit; returns the seconds from all actors ready to the last result.

        `on_done(unit, result)` is called on the driver as each unit succeeds. Raises
        `UnitFailedError` when a unit exhausts its retries. Every actor is killed on return.
        """
        self.queue = UnitQueue(list(units), max_retries)
        for index in range(min(self.num_actors, max(len(units), 1))):
            self.actors[index] = self.start_actor(f"w{index}")
            self.generation[index] = 0
            self.queued[index] = deque()
        try:
            ray.get([actor.ready.remote() for actor in self.actors.values()])  # models loaded
            began = time.perf_counter()
            for index in self.actors:
                self._fill(index)
            while self.in_flight:
                ready, _ = ray.wait(list(self.in_flight), num_returns=1)
                index = self._settle(ready[0], on_done)
                self._fill(index)
            return time.perf_counter() - began
        finally:
            for actor in self.actors.values():
                ray.kill(actor, no_restart=True)

    def _fill(self, index: int) -> None:
        """Queue units on actor `index` until it holds `in_flight_per_actor`."""
        while len(self.queued[index]) < self.in_flight_per_actor:
            item = self.queue.next_unit()
            if item is None:
                return
            unit, attempt = item
            ref = self.actors[index].process.remote(unit, attempt)
            self.in_flight[ref] = (index, unit, attempt)
            self.queued[index].append(ref)

    def _settle(self, ref, on_done: Callable[[int, dict], None] | None) -> int:
        """Take one finished result: success, a unit's error, or a dead actor; returns the
        index of the actor it came from."""
        index, unit, _ = self.in_flight[ref]
        try:
            result = ray.get(ref)
        except RayActorError as error:
            self._replace(index, error)
            return index
        except Exception as error:  # the unit raised inside a live actor
            self._forget(index, ref)
            cause = getattr(error, "cause", None) or error
            self.queue.failed(unit, f"attempt on w{index}: {type(cause).__name__}: {cause}")
            return index
        self._forget(index, ref)
        self.queue.succeeded(unit)
        if on_done is not None:
            on_done(unit, result)
        return index

    def _forget(self, index: int, ref) -> None:
        self.in_flight.pop(ref)
        self.queued[index].remove(ref)

    def _replace(self, index: int, error: Exception) -> None:
        """The actor died: its oldest unit spends a retry, the ones queued behind it do not."""
        for position, ref in enumerate(list(self.queued[index])):
            _, unit, _ = self.in_flight.pop(ref)
            self.queue.failed(
                unit, f"actor w{index} died: {type(error).__name__}: {error}", counts=position == 0
            )
        self.queued[index].clear()
        ray.kill(self.actors[index], no_restart=True)
        self.generation[index] += 1
        self.actors[index] = self.start_actor(f"w{index}.{self.generation[index]}")
