"""A real S3-compatible server for tests: moto's standalone server, a separate process on
127.0.0.1 speaking the S3 HTTP API (not a mock of the client library).

Clients find it only through the standard environment variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), as users' clients
find theirs, so the tests exercise the same credential path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SECRET = "test-secret-9f3c1e-never-printed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def forget_clients() -> None:
    """Drop fsspec's cached S3 filesystems: each holds the endpoint it was made with, and
    a test module's server (its port) is gone when the next module starts its own."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


class S3Server:
    """`with S3Server() as server:` a moto server; `server.env` holds the client settings."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        forget_clients()
        binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def __exit__(self, *exc_info) -> None:
        forget_clients()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextlib.contextmanager
def serving(bucket: str, **extra_env: str):
    """A server with `bucket` made and this process's AWS_* variables pointing at it (and
    `extra_env`), restored on exit: yields (server, an s3fs filesystem)."""
    import pytest
    import s3fs

    with S3Server() as server, pytest.MonkeyPatch.context() as patch:
        for key, value in {**server.env, **extra_env}.items():
            patch.setenv(key, value)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(bucket)
        yield server, fs


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m module *args` from the repository root with `env` added; its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
