"""verify(): prove a store is complete and that its bytes are the bytes that were committed.

Checks, collecting every problem before raising: every unit of [0, num_units) has a commit
record and no record lies outside it; each record's row range is the plan's, so ranges are
contiguous and cover [0, num_rows); each hook's bytes read back through Zarr hash to the
recorded sha256 (a flipped byte in the data changes the hash; one in a shard index fails
Zarr's own crc32c); the plan parts tile [0, num_rows) and each part's token and docs files
hash to the sha256 in its record; `_SUCCESS` exists.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.store.layout import SUCCESS
from pipeline.store.manifest import committed_units
from pipeline.store.parts import read_part_record

if TYPE_CHECKING:
    from pipeline.store.reader import ActivationStore

_MAX_LISTED = 20


class StoreVerificationError(ValueError):
    """The store is incomplete or damaged; `problems` lists what is wrong."""

    def __init__(self, root: Any, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:_MAX_LISTED]
        more = len(problems) - len(shown)
        super().__init__(
            f"store {root} failed verification ({len(problems)} problems):\n  - "
            + "\n  - ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )


def verify_store(store: ActivationStore, check_data: bool = True) -> dict[str, Any]:
    problems: list[str] = []
    committed = store.committed_units()
    missing = store.pending_units()
    if missing:
        problems.append(f"{len(missing)} units not committed: {_preview(missing)}")
    extra = sorted(committed_units(store.root) - set(range(store.num_units)))
    if extra:
        problems.append(f"commit records for units outside [0, {store.num_units}): {extra}")
    bytes_checked = 0
    for unit in sorted(committed):
        found, checked = unit_problems(store, unit, check_data)
        problems += found
        bytes_checked += checked
    bytes_checked += _check_parts(store, check_data, problems)
    if not (store.root / SUCCESS).is_file():
        problems.append(f"{SUCCESS} is missing (finalize() has not run)")
    if problems:
        raise StoreVerificationError(store.root, problems)
    return {
        "num_units": store.num_units,
        "num_committed": len(committed),
        "num_rows": store.num_rows,
        "hooks": list(store.hooks),
        "data_checked": check_data,
        "bytes_checked": bytes_checked,
    }


def unit_problems(store: ActivationStore, unit: int, check_data: bool) -> tuple[list[str], int]:
    """What is wrong with a committed unit, and the bytes hashed to find out.

    Cheap checks always (the record parses and names this unit's rows and every hook; each
    shard file it names exists with the recorded size); with `check_data`, each hook's
    rows read back through Zarr hash to the recorded sha256.
    """
    problems: list[str] = []
    try:
        record = store.unit_record(unit)
        checked = _check_unit(store, unit, record, check_data, problems)
    except (OSError, ValueError) as e:  # unreadable or not JSON: a problem, not a crash
        return [f"unit {unit}: commit record cannot be read ({type(e).__name__}: {e})"], 0
    except (KeyError, TypeError, AttributeError) as e:
        return [f"unit {unit}: commit record is malformed ({type(e).__name__}: {e})"], 0
    return problems, checked


def _check_unit(
    store: ActivationStore, unit: int, record: Any, check_data: bool, problems: list[str]
) -> int:
    if not isinstance(record, dict):
        problems.append(f"unit {unit}: commit record is not a JSON object")
        return 0
    start = unit * store.rows_per_unit
    stop = min(start + store.rows_per_unit, store.num_rows)
    got = (record.get("unit"), record.get("row_start"), record.get("row_stop"))
    if got != (unit, start, stop):
        problems.append(f"unit {unit}: record says unit/rows {got}, expected {(unit, start, stop)}")
        return 0
    checked = 0
    arrays = record.get("arrays", {})
    if set(arrays) != set(store.hooks):
        problems.append(f"unit {unit}: record has hooks {sorted(arrays)}, store {store.hooks}")
    for hook in store.hooks:
        if hook not in arrays:
            continue
        entry = arrays[hook]
        if "file" in entry:  # records written since the file and its size were recorded
            path = store.root / entry["file"]
            size = path.stat().st_size if path.is_file() else None
            if size is None:
                problems.append(f"unit {unit}, hook {hook!r}: shard {entry['file']} is missing")
                continue
            if size != entry["bytes"]:
                problems.append(
                    f"unit {unit}, hook {hook!r}: shard {entry['file']} does not match its "
                    f"record ({size} bytes, recorded {entry['bytes']})"
                )
                continue
        if not check_data:
            continue
        try:
            stored = np.ascontiguousarray(store.activations(hook)[start:stop])
        except Exception as e:
            problems.append(f"unit {unit}, hook {hook!r}: cannot read rows: {e}")
            continue
        checked += stored.nbytes
        if hashlib.sha256(stored.data).hexdigest() != entry.get("sha256"):
            problems.append(f"unit {unit}, hook {hook!r}: data does not match its sha256")
    return checked


def part_problems(store: Any, part: dict[str, int], check_data: bool) -> tuple[list[str], int]:
    """What is wrong with one plan part: its record, and its token and docs files (each
    must exist with the recorded size; with `check_data`, hash to the recorded sha256)."""
    index = part["part"]
    problems: list[str] = []
    try:
        record = read_part_record(store.root, index, store.meta["part_name_width"])
    except (OSError, ValueError) as e:
        return [f"part {index}: record cannot be read ({e})"], 0
    if record is None:
        return [f"part {index}: plan record is missing"], 0
    checked = 0
    try:
        for kind in ("tokens", "docs"):
            checked += _check_file(store, index, kind, record[kind], check_data, problems)
        if record["tokens"]["num_rows"] != part["row_stop"] - part["row_start"]:
            problems.append(f"part {index}: token file holds {record['tokens']['num_rows']} rows")
    except (KeyError, TypeError) as e:
        problems.append(f"part {index}: record is malformed ({type(e).__name__}: {e})")
    return problems, checked


def _check_parts(store: ActivationStore, check_data: bool, problems: list[str]) -> int:
    """Parts tile the rows; each part's files match the sha256 its record holds."""
    checked, row = 0, 0
    for part in store.meta["parts"]:
        if part["row_start"] != row:
            problems.append(
                f"part {part['part']}: starts at row {part['row_start']}, expected {row}"
            )
        row = part["row_stop"]
        found, part_checked = part_problems(store, part, check_data)
        problems += found
        checked += part_checked
    if row != store.num_rows:
        problems.append(f"plan parts cover rows [0, {row}), the store has {store.num_rows}")
    return checked


def _check_file(store, index: int, kind: str, entry: dict, check_data: bool, problems) -> int:
    path = store.root / entry["path"]
    if not path.is_file():
        problems.append(f"part {index}: {kind} file {entry['path']} is missing")
        return 0
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        problems.append(
            f"part {index}: {kind} file {entry['path']} does not match its record ({size} "
            f"bytes, recorded {entry['bytes']})"
        )
        return 0
    if not check_data:
        return 0
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != entry["sha256"]:
        problems.append(f"part {index}: {kind} file {entry['path']} does not match its sha256")
    return len(payload)


def _preview(units: list[int]) -> str:
    return ", ".join(map(str, units[:_MAX_LISTED])) + (" ..." if len(units) > _MAX_LISTED else "")
