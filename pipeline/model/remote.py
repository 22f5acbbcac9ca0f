"""Model folders: a local path as given, or a folder on object storage copied once per node.

transformers loads only from a local folder, so a model at `s3://bucket/models/gpt2` is
copied into a cache folder on the node (`~/.cache/activation-pipeline/models/<sha256 of
the URL>[:16]`, or under `$PIPELINE_MODEL_CACHE`) and loaded from there. The copy is made
in a temporary folder next to the cache folder and renamed into place, so a reader never
sees half a copy and two processes racing on one node both end with one complete folder
(the loser of the rename discards its own copy). A marker file written into the copy
before the rename records the URL, every file's size and the weights hash; a later call
trusts the cache only when the folder still matches it, and copies again otherwise (a
truncated weights file, a deleted tokenizer file).

The weights hash is the one a capture records in its store (`weights_fingerprint`: file
names and bytes, not paths), so a store captured from the URL, from the cache or from a
local copy of the same folder has the same fingerprint; the store records the URL as the
model's name, never the cache path. Credentials come from the standard places only
(`pipeline/store/location.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import posixpath
import shutil
import time
import uuid
from pathlib import Path

from pipeline.store.location import is_url, resolve

CACHE_ENV = "PIPELINE_MODEL_CACHE"
STALE_AFTER_S = 600.0  # a killed copy's folder untouched this long is swept
MARKER = ".pipeline-model-copy.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def model_cache_root() -> Path:
    """Where copied model folders live: `$PIPELINE_MODEL_CACHE`, else under ~/.cache."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "activation-pipeline" / "models"


def local_model_folder(path_or_url: str | os.PathLike) -> Path:
    """A local folder holding the model: a local path unchanged, a URL's cached copy.

    The copy is made on the first call on a node and reused while its files match the
    marker written after the copy (sizes and weights hash); a damaged copy is replaced.
    """
    if not is_url(path_or_url):
        return Path(path_or_url)
    url = resolve(path_or_url)
    folder = model_cache_root() / hashlib.sha256(url.encode()).hexdigest()[:16]
    sweep_stale_copies(folder)
    if _intact(folder, url):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    part = folder.parent / f".{folder.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _copy(url, part)
        _install(part, folder, url)
    finally:
        shutil.rmtree(part, ignore_errors=True)  # the loser's copy, or a failed one
    return folder


def sweep_stale_copies(folder: Path, quiet_for: float = STALE_AFTER_S) -> list[str]:
    """Delete what killed copies of `folder` left beside it; the names deleted.

    A copy in progress is `.NAME.part-PID-*`; it is stale when process PID no longer runs
    on this node and none of its files changed for `quiet_for` seconds (the second test
    keeps a copy made by another container, whose PIDs this one cannot see). A folder
    moved aside as damaged (`.NAME.damaged-*`) is garbage as soon as it exists. Model
    copies can be tens of GB, so a node must not keep the leftovers of every killed job.
    """
    if not folder.parent.is_dir():
        return []
    swept = []
    now = time.time()
    for entry in folder.parent.iterdir():
        if entry.name.startswith(f".{folder.name}.damaged-"):
            stale = True
        elif entry.name.startswith(f".{folder.name}.part-"):
            pid = entry.name.removeprefix(f".{folder.name}.part-").split("-")[0]
            stale = not _running(pid) and now - _last_change(entry) > quiet_for
        else:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            swept.append(entry.name)
    return swept


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _last_change(folder: Path) -> float:
    """The newest mtime in a folder (the folder itself included)."""
    with contextlib.suppress(OSError):
        times = [folder.stat().st_mtime]
        times += [p.stat().st_mtime for p in folder.rglob("*")]
        return max(times)
    return 0.0


def weights_fingerprint(path: Path) -> str:
    """sha256 over the model folder's weight files (names and bytes), in sorted order.

    Hashing GPT-2 small's 500 MB takes about 0.3 s, so a process hashes a folder once and
    reuses the digest while every weight file keeps its size and mtime (a capture run
    again in the same process, a notebook, the benchmarks).
    """
    files = sorted(p for p in Path(path).iterdir() if p.suffix in WEIGHT_SUFFIXES)
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(stamps)


@functools.lru_cache(maxsize=16)
def _hash_files(stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        file = Path(name)
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _copy(url: str, part: Path) -> None:
    """Every object under `url` into the folder `part`, then the marker."""
    import fsspec

    fs, prefix = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(prefix)
    keys = sorted(fs.find(prefix))
    names = [posixpath.relpath(key, prefix) for key in keys]
    if not names:
        raise ValueError(f"model {url} holds no files; check the URL (a model folder is needed)")
    if names == ["."]:
        raise ValueError(f"model {url} is one file; give the folder that holds config.json")
    targets = [str(part / name) for name in names]
    for target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    fs.get(keys, targets)  # concurrent downloads
    marker = {
        "url": url,
        "files": {name: (part / name).stat().st_size for name in names},
        "weights_sha256": weights_fingerprint(part),
    }
    (part / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))


def _install(part: Path, folder: Path, url: str) -> None:
    """Rename the copy into place, unless another process installed an intact one first.

    The renames run under a lock file so that replacing a damaged folder cannot move aside
    the intact folder another process has just installed; the copying itself is unlocked.
    """
    lock = folder.parent / f".{folder.name}.lock"
    aside = None
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if _intact(folder, url):
                return  # another process won: ours is discarded
            if folder.exists():
                aside = folder.parent / f".{folder.name}.damaged-{uuid.uuid4().hex[:8]}"
                folder.rename(aside)
            part.rename(folder)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _intact(folder: Path, url: str) -> bool:
    """Whether `folder` is a complete copy of `url`: its marker, file sizes, weights hash."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        marker = json.loads((folder / MARKER).read_text())
        if marker["url"] != url:
            return False
        for name, size in marker["files"].items():
            if (folder / name).stat().st_size != size:
                return False
        return weights_fingerprint(folder) == marker["weights_sha256"]
    return False
