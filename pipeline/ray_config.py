"""How work is spread over Ray actors: one `RayConfig` shared by capture and interventions.

These settings say how a job runs on Ray (how many actors, what each reserves, how many
units each holds, how often a unit is retried), not what it computes: a store or an
intervention's effects are the same bytes whatever they are. So they live apart from
`CaptureConfig` and `InterventionSpec`, in a `ray:` section of a job's YAML
(`--set ray.num_workers=4`), and single-process runs ignore them. Plain values, checked on
construction (no ray, no torch here): the same object is sent to Ray actors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.checks import check_int, check_number


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """num_workers: Ray actors, one model replica each (>= 1).
    num_cpus_per_worker / num_gpus_per_worker: Ray resources per actor (>= 0, fractions
        allowed: 0.5 GPU packs two replicas on one GPU).
    units_in_flight_per_worker: units queued on each actor at once (>= 1), so it never
        idles between units (interventions queue one).
    max_retries: attempts per unit beyond the first before the job fails (>= 0).
    """

    num_workers: int = 2
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    units_in_flight_per_worker: int = 2
    max_retries: int = 3

    def __post_init__(self) -> None:
        check_int("num_workers", self.num_workers)
        check_int("units_in_flight_per_worker", self.units_in_flight_per_worker)
        check_int("max_retries", self.max_retries, minimum=0)
        check_number("num_gpus_per_worker", self.num_gpus_per_worker)
        check_number("num_cpus_per_worker", self.num_cpus_per_worker)


RAY_KEYS = tuple(f.name for f in dataclasses.fields(RayConfig))


def ray_config_from_dict(values: Any) -> RayConfig:
    """A `ray:` section (a mapping of RayConfig fields; None: the defaults) into a RayConfig
    (a RayConfig is returned as it is)."""
    if values is None:
        return RayConfig()
    if isinstance(values, RayConfig):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(
            f"ray must be a mapping of Ray settings ({', '.join(RAY_KEYS)}), "
            f"got {values!r} ({type(values).__name__})"
        )
    unknown = sorted(set(values) - set(RAY_KEYS), key=str)
    if unknown:
        raise ValueError(f"unknown ray keys {unknown}; known keys: {', '.join(RAY_KEYS)}")
    return RayConfig(**values)


def refuse_top_level_ray_keys(values: Mapping[str, Any]) -> None:
    """Ray settings given at the top level (where they were before the `ray:` section) are
    refused in one line that says where they go now."""
    misplaced = [key for key in RAY_KEYS if key in values]
    if not misplaced:
        return
    sets = " ".join(f"--set ray.{key}={_typed(values[key])}" for key in misplaced)
    if len(misplaced) == 1:
        raise ValueError(
            f"{misplaced[0]} is a Ray setting: put it under ray: in the YAML, or {sets}"
        )
    raise ValueError(
        f"{', '.join(misplaced)} are Ray settings: put them under ray: in the YAML, or {sets}"
    )


def _typed(value: Any) -> str:
    """A value as it would be typed after `--set key=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
