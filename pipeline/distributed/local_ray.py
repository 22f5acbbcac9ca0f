"""Local Ray instances that listen on 127.0.0.1 only, and drivers that can join them.

On Linux Ray replaces a loopback node address with the machine's external one, and GCS,
raylet, workers and agents then listen on every interface. It keeps loopback where it
assumes a single machine (macOS, Windows, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), a setting
read when `ray` is imported: hence the module flag, and the variable for the processes Ray
starts; both are restored once `ray.init` returns. A driver joining such an instance needs
the same setting, or it waits forever for a GCS on its external address. Used by the jobs
(`ensure_ray`), the tests and the benchmarks, so no instance we start is reachable from
another machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import ray
import ray._private.ray_constants as ray_constants

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@contextlib.contextmanager
def single_machine() -> Iterator[None]:
    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(name)
    ray_constants.ENABLE_RAY_CLUSTER, os.environ[name] = False, "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def start_local_ray(**init_kwargs: Any):
    """`ray.init` of a new local instance (never an existing cluster), loopback only."""
    with single_machine():
        return ray.init(
            address="local",  # never attach to whatever cluster runs on this machine
            _node_ip_address="127.0.0.1",
            dashboard_host="127.0.0.1",
            **init_kwargs,
        )


def join_ray(address: str, **init_kwargs: Any):
    """`ray.init` joining the cluster at `address` (a loopback one as a local driver)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        return ray.init(address=address, **init_kwargs)
    with single_machine():
        return ray.init(address=address, _node_ip_address="127.0.0.1", **init_kwargs)


def ensure_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (set inside `ray job submit`), else start a
    local instance whose every port listens on 127.0.0.1 only (stopped at exit)."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        join_ray(address, log_to_driver=True)
        return
    start_local_ray(log_to_driver=True)
