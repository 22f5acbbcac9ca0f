"""verify(): prove a store is complete and that its bytes are the bytes that were committed.

Checks, collecting every problem before raising: every unit of [0, num_units) has a commit
record and no record lies outside it; each record's row range is the plan's, so ranges are
contiguous and cover [0, num_rows); each hook's bytes read back through Zarr hash to the
recorded sha256 (a flipped byte in the data changes the hash; one in a shard index fails
Zarr's own crc32c); each token file hashes to its recorded sha256 and holds exactly the
rows of its unit; `_SUCCESS` exists.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.store.layout import SUCCESS
from pipeline.store.manifest import committed_units

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
        try:
            bytes_checked += _check_unit(store, unit, check_data, problems)
        except Exception as e:  # a record that cannot be read is a problem, not a crash
            problems.append(f"unit {unit}: could not check: {type(e).__name__}: {e}")
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


def _check_unit(store: ActivationStore, unit: int, check_data: bool, problems: list[str]) -> int:
    try:
        record = store.unit_record(unit)
    except json.JSONDecodeError as e:
        problems.append(f"unit {unit}: commit record is not valid JSON ({e})")
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
        if not check_data or hook not in arrays:
            continue
        try:
            stored = np.ascontiguousarray(store.activations(hook)[start:stop])
        except Exception as e:
            problems.append(f"unit {unit}, hook {hook!r}: cannot read rows: {e}")
            continue
        checked += stored.nbytes
        if hashlib.sha256(stored.data).hexdigest() != arrays[hook].get("sha256"):
            problems.append(f"unit {unit}, hook {hook!r}: data does not match its sha256")
    tokens = record.get("tokens", {})
    path = store.root / tokens.get("path", "")
    if not path.is_file():
        problems.append(f"unit {unit}: token table {path} is missing")
        return checked
    payload = path.read_bytes()
    checked += len(payload)
    if hashlib.sha256(payload).hexdigest() != tokens.get("sha256"):
        problems.append(f"unit {unit}: token table {path.name} does not match its sha256")
        return checked
    rows = pq.read_table(path, columns=["row"]).column("row").to_numpy()
    if len(rows) != stop - start or not np.array_equal(rows, np.arange(start, stop)):
        problems.append(f"unit {unit}: token table rows are not [{start}, {stop})")
    return checked


def _preview(units: list[int]) -> str:
    return ", ".join(map(str, units[:_MAX_LISTED])) + (" ..." if len(units) > _MAX_LISTED else "")
