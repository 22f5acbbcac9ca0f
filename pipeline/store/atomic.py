"""Atomic file writes: a hidden temp file, optionally fsynced, renamed into place.

Every file of a store is written this way, so no reader (and no `pyarrow.dataset`, which
skips hidden names) ever sees a partial file, and a crash leaves only a hidden temp that
`finalize()` sweeps up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.store.layout import temp_sibling


def write_atomic(path: Path, chunks: Iterable, fsync: bool = True) -> None:
    """Write the bytes-like `chunks` in order as the file at `path`, all or nothing."""
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
