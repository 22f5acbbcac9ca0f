"""End to end: `ray start --head` on loopback, `ray job submit` the default capture.

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


def test_ray_job_submit_default_capture(head_node, tmp_path):
    address, env = head_node
    out = tmp_path / "store"
    command = ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--no-wait"]
    command += ["--", "python", "-m", "jobs.capture", "--set", "max_tokens=12000"]
    command += [
        "--set",
        "rows_per_unit=2048",
        "--set",
        "num_cpus_per_worker=0.5",
        "--out",
        str(out),
    ]
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
    assert f"store: {out}" in logs and "progress:" in logs
    store = ActivationStore.open(out)
    summary = store.verify()
    assert store.num_rows == 12000 and store.hooks == ["layer_1", "layer_3", "layer_5"]
    assert summary
