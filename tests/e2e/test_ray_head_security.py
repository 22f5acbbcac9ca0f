"""End to end: `infra/ray-local.sh start` gives a closed head by default: every socket of
the cluster on loopback, token authentication on, the token in a file only its owner reads.

The head is started with the caller's RAY_AUTH_* variables removed, as a user's first run
would be. Clients run as subprocesses: one with nothing (an empty HOME, so no
~/.ray/auth_token either) and one with what the script's client.env says. It stops only the
cluster it started (its own --temp-dir and ports, none shared with test_job_submit.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
GCS_PORT, DASHBOARD_PORT, AGENT_PORT, CLIENT_PORT = 6391, 8276, 52396, 20001
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def run(*args, env, timeout=300, check=True):
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=check
    )


def env_without_auth(**extra: str) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env.pop("RAY_ADDRESS", None)
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}


def client_env(cluster_dir: Path, base: dict[str, str]) -> dict[str, str]:
    """`base` with DIR/client.env applied (its `export K=V` and `unset K` lines)."""
    env = dict(base)
    for line in (cluster_dir / "client.env").read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word == "unset":
            env.pop(rest, None)
        elif word == "export":
            key, _, value = rest.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """(cluster dir, job address, a HOME without any token) of a head started by default."""
    cluster_dir = Path(tempfile.mkdtemp(prefix="raySEC", dir="/tmp"))
    empty_home = tmp_path_factory.mktemp("home-without-token")
    env = env_without_auth()
    ports = [str(p) for p in (GCS_PORT, DASHBOARD_PORT, AGENT_PORT, CLIENT_PORT)]
    try:
        started = run("infra/ray-local.sh", "start", str(cluster_dir), *ports, env=env, check=False)
        assert started.returncode == 0, f"ray-local.sh start failed:\n{started.stderr}"
        yield cluster_dir, started.stdout.strip(), empty_home
    finally:
        run("infra/ray-local.sh", "stop", str(cluster_dir), env=env, check=False)
        shutil.rmtree(cluster_dir, ignore_errors=True)


def cluster_processes(cluster_dir: Path) -> list[psutil.Process]:
    """Processes naming the cluster's session dir or GCS port, and their descendants."""
    session, gcs = f"{cluster_dir}/session_", f":{GCS_PORT}"
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        if process.pid != os.getpid() and any(session in a or a.endswith(gcs) for a in args):
            roots.append(process)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update((c.pid, c) for c in root.children(recursive=True))
    return list(found.values())


def listening_sockets(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addresses |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}
    return addresses


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def external_ipv4_addresses() -> list[str]:
    return [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    ]


def test_every_socket_of_the_head_listens_on_loopback_only(head):
    cluster_dir, _, _ = head
    expected = {GCS_PORT, DASHBOARD_PORT, AGENT_PORT, CLIENT_PORT}
    deadline = time.monotonic() + 60  # the client server starts after `ray start` returns
    while True:
        sockets = listening_sockets(cluster_processes(cluster_dir))
        ports = {port for _, port in sockets}
        if expected <= ports or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected <= ports, sorted(sockets)
    exposed = sorted(s for s in sockets if not is_loopback(s[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"
    for ip in external_ipv4_addresses():  # what the remote `ray://` client reached before
        for port in sorted(ports):
            with socket.socket() as probe, pytest.raises(OSError):
                probe.settimeout(2)
                probe.connect((ip, port))


def test_token_file_and_cluster_dir_are_private(head):
    cluster_dir, _, _ = head
    token_env = client_env(cluster_dir, {})
    assert token_env["RAY_AUTH_MODE"] == "token"
    token_file = Path(token_env["RAY_AUTH_TOKEN_PATH"])
    assert token_file.parent == cluster_dir
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster_dir.stat().st_mode) == 0o700
    assert len(token_file.read_text()) == 64


def test_dashboard_api_refuses_requests_without_the_right_token(head):
    _, address, _ = head
    for headers, code in (({}, 401), ({"Authorization": "Bearer not-the-token"}, 403)):
        request = urllib.request.Request(f"{address}/api/jobs/", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == code


def test_job_submit_without_the_token_is_refused(head):
    _, address, empty_home = head
    env = env_without_auth(HOME=str(empty_home))
    command = ["ray", "job", "submit", "--address", address, "--", "python", "-c", "print(1)"]
    submitted = run(*command, env=env, check=False)
    assert submitted.returncode != 0
    assert "Authentication required" in submitted.stdout + submitted.stderr


def test_job_submit_with_the_token_from_client_env_runs(head):
    """The job's own driver joins the cluster too: its processes carry the token path."""
    cluster_dir, address, empty_home = head
    env = client_env(cluster_dir, env_without_auth(HOME=str(empty_home)))
    code = "import ray; ray.init(); print('nodes alive:', len(ray.nodes()))"
    command = ["ray", "job", "submit", "--address", address, "--", "python", "-c", code]
    # The dashboard agent can take a few seconds after `ray start` to accept jobs.
    for _ in range(15):
        submitted = run(*command, env=env, check=False)
        if "No available agent" not in submitted.stdout + submitted.stderr:
            break
        time.sleep(2)
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output
    assert "nodes alive: 1" in output and "succeeded" in output


def test_an_unknown_auth_mode_is_refused_before_anything_starts(tmp_path):
    cluster_dir = tmp_path / "never-started"
    env = env_without_auth(RAY_AUTH_MODE="off")
    started = run("infra/ray-local.sh", "start", str(cluster_dir), env=env, check=False)
    assert started.returncode == 2 and "use token (the default) or disabled" in started.stderr
    assert not cluster_dir.exists()
