"""store.json: what a store is, and whether a new run may resume it.

The ``fingerprint`` section holds everything that decides the bytes of the store (model
id and weights hash, dtype, tokenizer, hooks, context length, mode, corpus fingerprint,
rows per unit, max tokens, and the plan's own hash). A run may resume a store only if its
fingerprint is equal; otherwise it is refused with every differing field named, and the
store is left untouched. The pipeline version is recorded but not compared: a new release
may resume an old store as long as it would write the same bytes.
"""

from __future__ import annotations

import functools
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pipeline.store.atomic import fsync_dir, write_atomic
from pipeline.store.layout import FORMAT_VERSION, PLAN_DIR, PLAN_JSON, STORE_JSON

_ABSENT = "<absent>"


class NotAStoreError(ValueError):
    """The path is not an activation store (or not a complete one)."""


class StoreMismatchError(ValueError):
    """An existing store was made with a different configuration.

    `differences` maps each differing fingerprint field to (old value, new value).
    """

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]]) -> None:
        self.path = path
        self.differences = differences
        lines = [
            f"  {key}: store has {old!r}, this run has {new!r}"
            for key, (old, new) in differences.items()
        ]
        super().__init__(
            f"the store at {path} was made with a different configuration:\n"
            + "\n".join(lines)
            + "\nits data was not touched; pass --overwrite to replace it "
            "(or choose another output path)"
        )


@functools.cache
def pipeline_version() -> str:
    """The installed package's version (looked up once: the lookup reads metadata files)."""
    try:
        return importlib_metadata.version("activation-pipeline")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every top-level key whose value differs, as (old, new); missing keys show '<absent>'."""
    keys = list(old) + [key for key in new if key not in old]
    return {
        key: (old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in keys
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    }


def read_store_json(root: Path) -> dict[str, Any]:
    path = root / STORE_JSON
    if not root.exists():
        raise NotAStoreError(f"{root} does not exist")
    if not root.is_dir():
        raise NotAStoreError(f"{root} is a file, not an activation store directory")
    if not path.is_file():
        if (root / PLAN_DIR / PLAN_JSON).is_file():
            raise NotAStoreError(
                f"{root} is a store still being planned (it has {PLAN_DIR}/{PLAN_JSON} but no "
                f"{STORE_JSON}); run the same capture command again to finish it"
            )
        raise NotAStoreError(f"{root} is not an activation store: it has no {STORE_JSON}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NotAStoreError(f"{path} is not valid JSON: {e}") from e
    version = meta.get("format_version")
    if version == 1:
        raise NotAStoreError(
            f"{root} is a format 1 store (one token file per unit, docs.parquet); this pipeline "
            f"reads format {FORMAT_VERSION}. Its files still open with pandas and zarr as "
            "before; to use it here, capture it again into a new folder (or with --overwrite)"
        )
    if version != FORMAT_VERSION:
        raise NotAStoreError(
            f"{root} has store format_version {version!r}; this pipeline reads {FORMAT_VERSION}"
        )
    return meta


def write_json_atomic(path: Path, payload: dict[str, Any], exclusive: bool = False) -> None:
    """Write JSON via a hidden temp file, fsync it, rename it into place, fsync the folder
    (on object storage: one whole object; `exclusive` creates it only if absent).

    After this returns the file is durable, and no reader ever sees a partial file.
    """
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    write_atomic(path, [text.encode()], fsync=True, exclusive=exclusive)
    fsync_dir(path.parent)
