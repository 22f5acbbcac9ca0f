"""End to end: `ray start --head` on loopback, `ray job submit` the default capture, then
stage-2 interventions on the store it wrote.

Runs in CI (marked slow). It stops only the cluster it started (its own --temp-dir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.store.reader import ActivationStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def run(*args, env, timeout=300, check=True):
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def head_node():
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cluster_dir = Path(tempfile.mkdtemp(prefix="rayE2E", dir="/tmp"))
    try:
        address = run(
            "infra/ray-local.sh", "start", str(cluster_dir), "6390", "8275", env=env
        ).stdout.strip()
        yield address, env
    finally:
        run("infra/ray-local.sh", "stop", str(cluster_dir), env=env, check=False)
        shutil.rmtree(cluster_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def submit_and_wait(address: str, env: dict, job: list[str]) -> tuple[str, str, str]:
    """`ray job submit` the job, wait for it to end; (job id, final status, logs)."""
    command = ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--no-wait"]
    command += ["--", *job]
    # The dashboard agent can take a few seconds after `ray start` to accept jobs.
    for _ in range(15):
        submitted = run(*command, env=env, check=False)
        if (
            submitted.returncode == 0
            or "No available agent" not in submitted.stdout + submitted.stderr
        ):
            break
        time.sleep(2)
    assert submitted.returncode == 0, (
        f"ray job submit failed:\n{submitted.stdout}\n{submitted.stderr}"
    )
    job_id = re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr).group(0)
    deadline = time.monotonic() + 480
    status = ""
    while time.monotonic() < deadline:
        answer = run("ray", "job", "status", "--address", address, job_id, env=env)
        status = (answer.stdout + answer.stderr).lower()
        if any(
            f"job '{job_id.lower()}' {word}" in status
            for word in ("succeeded", "failed", "stopped")
        ):
            break
        time.sleep(2)
    logs = run("ray", "job", "logs", "--address", address, job_id, env=env, check=False).stdout
    assert f"job '{job_id.lower()}' succeeded" in status, (
        f"job ended as:\n{status}\nlogs:\n{logs[-4000:]}"
    )
    return job_id, status, logs


def test_ray_job_submit_default_capture(head_node, work_dir):
    address, env = head_node
    out = work_dir / "store"
    job = ["python", "-m", "jobs.capture", "--set", "max_tokens=12000"]
    job += [
        "--set",
        "rows_per_unit=2048",
        "--set",
        "ray.num_cpus_per_worker=0.5",
        "--out",
        str(out),
    ]
    _, _, logs = submit_and_wait(address, env, job)
    assert f"store: {out}" in logs and "progress:" in logs
    store = ActivationStore.open(out)
    summary = store.verify()
    assert store.num_rows == 12000 and store.hooks == ["layer_1", "layer_3", "layer_5"]
    assert summary


def test_ray_job_submit_interventions_on_that_store(head_node, work_dir):
    """Stage 2 through the same entry point: the example spec, pointed at the e2e store."""
    address, env = head_node
    out = work_dir / "interventions"
    job = ["python", "-m", "jobs.intervene", "--spec", "jobs/configs/intervene-default.yaml"]
    job += ["--set", f"store={work_dir / 'store'}", "--set", "ray.num_cpus_per_worker=0.5"]
    job += ["--out", str(out)]
    _, _, logs = submit_and_wait(address, env, job)
    assert "6 units computed" in logs
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary.steps) == ["damp-layer-1", "damp-layer-1+mean-ablate-layer-3"]
    assert summary.tokens.tolist() == [12000, 12000]
    assert (summary.mean_change_layer_1 - 0.5).abs().max() < 1e-3
