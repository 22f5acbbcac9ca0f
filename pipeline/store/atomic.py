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


def _put_object(path: Path, chunks: Iterable, exclusive: bool) -> None:
    """One object from `chunks`. A plain put joins them once and hands the bytes to the
    client as they are (`pipe_file`: one PUT, or parts sliced from them when large);
    writing through a file object would copy them into its buffer and again on upload,
    three or four copies of every shard per hook in flight (measured: docs/performance.md,
    "Stores on object storage"). Exclusive creates (commit records, kilobytes) go through
    the file object, which sends `If-None-Match`."""
    counted = faults.metered(path)
    if not exclusive and not counted:
        path.fs.pipe_file(path.path, b"".join(chunks))
        return
    with path.open("xb" if exclusive else "wb") as f:
        _write_chunks(f, chunks, path, counted)
        if counted:
            faults.before_rename(path)  # the upload completes as the file closes


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
