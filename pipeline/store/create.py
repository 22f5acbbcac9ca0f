"""Create a store directory, or decide that an existing one may be resumed.

A store is made in two phases. `begin_store` writes `plan/plan.json` (the fingerprint:
everything that decides the bytes and is known before reading the corpus), then the
planner commits parts (token and docs files). `create_store` then creates the full-size
Zarr arrays and writes store.json last, so a directory with store.json is always a
planned, empty-or-partly-filled store, and one with only plan/plan.json is a planning to
resume. A rerun with another fingerprint is refused in either phase. Deleting is
guarded: we only ever remove the entries a store is made of, and refuse to touch a
non-empty directory that is not a store, even with overwrite=True.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zarr

from pipeline.store.dtypes import check_logical_dtype, stored_dtype
from pipeline.store.layout import (
    FORMAT_VERSION,
    KNOWN_ENTRIES,
    PLAN_DIR,
    PLAN_JSON,
    STORE_JSON,
    UNITS_DIR,
    ZARR_DIR,
    unit_name_width,
)
from pipeline.store.location import zarr_store
from pipeline.store.meta import (
    StoreMismatchError,
    fingerprint_differences,
    pipeline_version,
    read_store_json,
    write_json_atomic,
)
from pipeline.store.output_dir import foreign_entries, remove_entries
from pipeline.store.plan import PlanConfig
from pipeline.store.planner import PlanResult
from pipeline.store.shards import inner_chunk_rows


def validate_hooks(hooks: dict[str, int]) -> dict[str, int]:
    """Hook names become Zarr array names; widths must be positive ints."""
    if not isinstance(hooks, dict) or not hooks:
        raise ValueError("hooks must be a non-empty dict of hook name -> width d")
    for name, d in hooks.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("__"):
            raise ValueError(
                f"hooks: {name!r} cannot name a Zarr array (non-empty, no '/', no leading '__')"
            )
        if name in (".", ".."):
            raise ValueError(f"hooks: {name!r} cannot name a Zarr array")
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"hooks[{name!r}] must be a positive int width, got {d!r}")
    return dict(hooks)


def build_fingerprint(
    meta: dict[str, Any], hooks: dict[str, int], dtype: str, config: PlanConfig
) -> dict[str, Any]:
    """The caller's meta plus what the store itself knows decides the bytes.

    `meta` may repeat derived fields (dtype, hooks, context_length, ...) but must agree.
    Everything here is known before the corpus is read, so a rerun is checked at once.
    """
    derived = {
        "hooks": validate_hooks(hooks),
        "dtype": check_logical_dtype(dtype),
        "context_length": config.context_length,
        "mode": config.mode,
        "rows_per_unit": config.rows_per_unit,
        "max_tokens": config.max_tokens,
    }
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    for key, value in meta.items():
        try:
            json.dumps(value)
        except TypeError as e:
            raise ValueError(f"meta[{key!r}] must be JSON-serialisable: {e}") from e
        if key in derived and not _agrees(key, value, derived[key]):
            raise ValueError(
                f"meta[{key!r}] = {value!r} disagrees with the store's {key} = {derived[key]!r}"
            )
    return json.loads(json.dumps({**meta, **derived}))


def _agrees(key: str, given: Any, derived: Any) -> bool:
    if key == "hooks" and isinstance(given, list | tuple):
        return list(given) == list(derived)
    return json.loads(json.dumps(given)) == json.loads(json.dumps(derived))


def begin_store(
    root: Path, fingerprint: dict[str, Any], overwrite: bool, command: str | None = None
) -> dict[str, Any] | None:
    """store.json of a planned store with this fingerprint, or None when planning is to do.

    Creates the directory and plan/plan.json, or checks an existing one's fingerprint;
    raises StoreMismatchError naming every differing field, touching nothing. `command`:
    the shell command that finishes the store (shown by readers of an unfinished one).
    """
    if prepare_directory(root, overwrite):
        if (root / STORE_JSON).is_file():
            stored = read_store_json(root)
            _refuse_differences(root, stored["fingerprint"], fingerprint)
            return stored
        planned = json.loads((root / PLAN_DIR / PLAN_JSON).read_text())
        _refuse_differences(root, planned["fingerprint"], fingerprint)
        return None
    (root / PLAN_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        root / PLAN_DIR / PLAN_JSON,
        {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "command": command},
    )
    return None


def _refuse_differences(root: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    differences = fingerprint_differences(old, new)
    if differences:
        raise StoreMismatchError(root, differences)


def prepare_directory(root: Path, overwrite: bool) -> bool:
    """Make `root` ready; True if it already holds a store to resume (and not overwriting)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"store path {root} is an existing file; give a directory path")
    if not root.exists():
        return False
    foreign = foreign_entries(root, KNOWN_ENTRIES)
    if foreign:
        raise ValueError(
            f"store path {root} is a non-empty directory that is not an activation store "
            f"(it holds {foreign[:5]}); refusing to write or delete there"
        )
    entries = {entry.name for entry in root.iterdir()}
    resumable = STORE_JSON in entries or (root / PLAN_DIR / PLAN_JSON).is_file()
    if resumable and not overwrite:
        return True
    # Overwrite, or a creation that crashed before plan.json: nothing committed, remove it.
    remove_entries(root, entries)
    return False


def create_store(
    root: Path,
    fingerprint: dict[str, Any],
    hooks: dict[str, int],
    dtype: str,
    config: PlanConfig,
    plan: PlanResult,
) -> dict[str, Any]:
    """After planning: the empty full-size arrays and the unit folder, then store.json."""
    num_rows, rows_per_unit = plan.num_rows, config.rows_per_unit
    group = zarr.open_group(zarr_store(root / ZARR_DIR, read_only=False), mode="w", zarr_format=3)
    group.attrs.update({"format_version": FORMAT_VERSION, "num_rows": num_rows})
    feature_dim = "feature" if len(set(hooks.values())) == 1 else None
    stored = stored_dtype(dtype)
    hooks_meta = {}
    for name, d in hooks.items():
        chunk_rows = inner_chunk_rows(rows_per_unit, d * stored.itemsize)
        group.create_array(
            name,
            shape=(num_rows, d),
            dtype=stored,
            shards=(rows_per_unit, d),
            chunks=(chunk_rows, d),
            compressors=None,
            filters=None,
            fill_value=0,
            dimension_names=["row", feature_dim or f"feature_{d}"],
            attributes={"logical_dtype": dtype, "hook": name},
        )
        hooks_meta[name] = {
            "d": d,
            "array": f"{ZARR_DIR}/{name}",
            "logical_dtype": dtype,
            "stored_dtype": stored.name,
            "shard_rows": rows_per_unit,
            "chunk_rows": chunk_rows,
        }
    (root / UNITS_DIR).mkdir(exist_ok=True)
    num_units = -(-num_rows // rows_per_unit)
    command = json.loads((root / PLAN_DIR / PLAN_JSON).read_text()).get("command")
    store_json = {
        "format_version": FORMAT_VERSION,
        "pipeline_version": pipeline_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "command": command,
        "plan_fingerprint": plan.fingerprint,
        "hooks": hooks_meta,
        "dtype": dtype,
        "num_rows": num_rows,
        "num_units": num_units,
        "num_windows": plan.stats.num_windows,
        "rows_per_unit": rows_per_unit,
        "unit_name_width": unit_name_width(num_units),
        "part_name_width": plan.part_name_width,
        "plan": plan.stats.to_dict(),
        "parts": plan.parts,
    }
    write_json_atomic(root / STORE_JSON, store_json)
    return store_json


def consolidate(root: Path) -> None:
    """Consolidate Zarr metadata once, at the end (xarray reads it in one request)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(zarr_store(root / ZARR_DIR, read_only=False))
