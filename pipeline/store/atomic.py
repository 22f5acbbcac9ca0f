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
from pipeline.store.location import is_url


def write_atomic(path: Path, chunks: Iterable, fsync: bool = True, exclusive: bool = False) -> None:
    """Write the bytes-like `chunks` in order as the file at `path`, all or nothing.

    On object storage there is no rename, and none is needed: an object appears whole
    when its upload completes (a multipart upload of a large one included), or not at all.
    `exclusive` (object storage): create only if absent (`If-None-Match: *`), raising
    FileExistsError otherwise, so two attempts cannot both commit.
    """
    if is_url(path):
        _put_object(path, chunks, exclusive)
        return
    tmp = temp_sibling(path)
    counted = faults.metered(path)  # tests only: a kill at a chosen byte (pipeline/faults.py)
    try:
        with open(tmp, "wb") as f:
            _write_chunks(f, chunks, path, counted)
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


UPLOAD_PART = 8 << 20  # bytes an object upload holds: its parts are this size


def _put_object(path: Path, chunks: Iterable, exclusive: bool) -> None:
    """One object from `chunks`, sent in parts of UPLOAD_PART bytes.

    The chunks are handed to the client a part at a time (memoryview slices, no copy), so
    an upload buffers about one part, not the object: writing a shard through a file
    object in one call, or joining it into one bytes object for a single PUT, holds the
    whole shard again (or twice, with the socket's send buffer) per hook in flight
    (measured: docs/performance.md, "Stores on object storage"). Objects under one part
    go as one PUT; `exclusive` sends `If-None-Match` (commit records).
    """
    counted = faults.metered(path)
    with path.fs.open(path.path, "xb" if exclusive else "wb", block_size=UPLOAD_PART) as f:
        _write_chunks(f, _parts(chunks), path, counted)
        if counted:
            faults.before_rename(path)  # the upload completes as the file closes


def _parts(chunks: Iterable) -> Iterable:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        for start in range(0, len(view), UPLOAD_PART):
            yield view[start : start + UPLOAD_PART]


def _write_chunks(f, chunks: Iterable, path: Path, counted: bool) -> None:
    for chunk in chunks:
        if counted:
            faults.write_counted(f, chunk, path)
        else:
            f.write(chunk)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (object storage has no folders to sync)."""
    if is_url(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
