"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """An in-process local Ray instance with 2 CPUs on 127.0.0.1, one per test module."""
    import ray

    from pipeline.distributed.local_ray import start_local_ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    context = start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context
    ray.shutdown()
