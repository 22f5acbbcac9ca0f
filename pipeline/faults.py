"""Fault injection for tests: off unless the PIPELINE_FAULTS environment variable is set.

Tests kill or fail real processes at chosen moments without any field in the production
config or spec types. PIPELINE_FAULTS holds one JSON object; its keys:

  kill_unit, after_batches   die in unit `kill_unit` once `after_batches` of its batches
                             ran (default 0: before its first forward pass)
  raise_unit                 every attempt at unit `raise_unit` raises RuntimeError
  kill_at_byte, paths        die once this process has written `kill_at_byte` bytes through
                             `write_atomic` into files whose path contains `paths` (every
                             file if absent). Each file counts its bytes and then one more
                             for its rename, so a kill lands inside a shard, token-file or
                             commit-record write, or between the last byte and the rename
  once                       a file path: only the process that creates it (O_EXCL) dies,
                             so a replacement actor or a rerun carries on
  exit                       die with os._exit(exit) instead of SIGKILL

Ray actors and tasks do not inherit the driver's environment on a running cluster, so the
code that starts them passes `ray_options()` along.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, BinaryIO

ENV = "PIPELINE_FAULTS"

_lock = threading.Lock()
_written = 0  # bytes (and renames) counted towards kill_at_byte in this process


@functools.cache
def _parse(raw: str) -> dict[str, Any]:
    plan = json.loads(raw)
    if not isinstance(plan, dict):
        raise ValueError(f"{ENV} must hold a JSON object, got {raw!r}")
    return plan


def plan() -> dict[str, Any]:
    raw = os.environ.get(ENV)
    return _parse(raw) if raw else {}


def ray_options() -> dict[str, Any]:
    """Ray `.options()` carrying PIPELINE_FAULTS to actors and tasks (none when it is off)."""
    raw = os.environ.get(ENV)
    return {"runtime_env": {"env_vars": {ENV: raw}}} if raw else {}


def die(reason: str) -> None:
    """Die now (one-shot with `once`), as a lost node or an OOM kill would."""
    faults = plan()
    once = faults.get("once")
    if once is not None:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"pid {os.getpid()}: {reason}\n".encode())
        os.close(fd)
    if "exit" in faults:
        os._exit(int(faults["exit"]))
    os.kill(os.getpid(), signal.SIGKILL)


def at_batch(unit: int, batch_index: int) -> None:
    """Called by workers before each batch (`batch_index` counts from 0)."""
    faults = plan()
    if not faults:
        return
    if faults.get("raise_unit") == unit:
        raise RuntimeError(f"injected failure in unit {unit}")
    if faults.get("kill_unit") == unit and batch_index >= faults.get("after_batches", 0):
        die(f"unit {unit}, batch {batch_index}")


def metered(path: Path) -> bool:
    """Whether writes to `path` count towards kill_at_byte."""
    faults = plan()
    return "kill_at_byte" in faults and faults.get("paths", "") in str(path)


def write_counted(f: BinaryIO, chunk, path: Path) -> None:
    """Write `chunk`, dying after exactly the kill_at_byte-th counted byte."""
    global _written
    data = memoryview(chunk).cast("B")
    target = int(plan()["kill_at_byte"])
    with _lock:
        start = _written
        _written += len(data)
    if start < target <= start + len(data):
        cut = target - start
        f.write(data[:cut])
        f.flush()
        die(f"{path}: after byte {cut} of this write")
        data = data[cut:]  # still alive (`once` was spent elsewhere): write the rest
    f.write(data)


def before_rename(path: Path) -> None:
    """The rename of a finished temp file counts as one more byte."""
    global _written
    with _lock:
        _written += 1
        reached = _written == int(plan()["kill_at_byte"])
    if reached:
        die(f"{path}: written, before its rename")
