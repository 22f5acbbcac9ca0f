"""Atomic file writes: a hidden temp file, optionally fsynced, renamed into place.

Every file of a store is written this way, so no reader (and no `pyarrow.dataset`, which
skips hidden names) ever sees a partial file, and a crash leaves only a hidden temp that
`finalize()` sweeps up. A disk error (a full disk: ENOSPC) removes the temp and is raised
naming the file that could not be written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline import faults
from pipeline.store.layout import temp_sibling


def write_atomic(path: Path, chunks: Iterable, fsync: bool = True) -> None:
    """Write the bytes-like `chunks` in order as the file at `path`, all or nothing."""
    tmp = temp_sibling(path)
    counted = faults.metered(path)  # tests only: a kill at a chosen byte (pipeline/faults.py)
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                if counted:
                    faults.write_counted(f, chunk, path)
                else:
                    f.write(chunk)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if counted:
            faults.before_rename(path)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (None, str(tmp)) and e.filename2 is None:
            # A failed write() names no file ("[Errno 28] No space left on device"), and
            # the temp's name means nothing to the user: name the file being written.
            e.filename = str(path)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
