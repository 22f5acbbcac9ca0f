"""Commit records of an intervention output, and what a rerun checks before trusting one.

A unit is done when `units/unit-N.json` exists: the worker writes the effects file, then
the record, each atomically. But a finished output can be damaged afterwards (a record
emptied by a full disk or an editor, an effects file deleted, truncated or replaced), and
a rerun that trusted every record would skip such a unit and report "0 computed" over
missing data. So before skipping a committed unit a rerun checks, cheaply, that its record
parses, is for that unit, and that the effects file it names exists with the recorded
byte size; with `verify` it also compares the file's sha256 with the recorded one.

A unit that fails is made pending again: its record is deleted first (one unlink, made
durable), then its effects file, so a crash in between leaves a pending unit, never a
record that points at a missing file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.store.atomic import fsync_dir
from pipeline.store.layout import UNITS_DIR, record_file, unit_stem

EFFECTS_DIR = "effects"


def effects_path(unit: int, width: int) -> str:
    """The effects file of a unit, relative to the output folder."""
    return f"{EFFECTS_DIR}/{unit_stem(unit, width)}.parquet"


def effects_entry(unit: int, width: int, data: bytes | None, rows: int) -> dict:
    """The record's description of the effects file just written (None: no windows)."""
    if data is None:
        return {"file": None, "rows": 0, "bytes": 0, "sha256": None}
    return {
        "file": effects_path(unit, width),
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def damaged_units(out: Path, units: Iterable[int], width: int, verify: bool) -> dict[int, str]:
    """{unit: what is wrong} for each of `units` (committed ones) that cannot be trusted."""
    problems = {}
    for unit in units:
        problem = record_problem(out, unit, width, verify)
        if problem is not None:
            problems[unit] = problem
    return problems


def record_problem(out: Path, unit: int, width: int, verify: bool = False) -> str | None:
    """Why the committed unit's record or effects file cannot be trusted, or None."""
    path = record_file(out, unit, width)
    name = f"{UNITS_DIR}/{path.name}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return f"commit record {name} is unreadable ({error})"
    if not text.strip():
        return f"commit record {name} is empty"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return f"commit record {name} is not valid JSON ({error})"
    if not isinstance(record, dict):
        return f"commit record {name} is not a JSON object"
    if record.get("unit") != unit:
        return f"commit record {name} is for unit {record.get('unit')!r}"
    if not isinstance(record.get("sums"), dict):
        return f"commit record {name} has no per-stage sums"
    return _effects_problem(out, unit, width, record.get("effects"), name, verify)


def _effects_problem(
    out: Path, unit: int, width: int, effects: Any, name: str, verify: bool
) -> str | None:
    if not isinstance(effects, dict) or "file" not in effects:
        return f"commit record {name} does not describe an effects file"
    if effects["file"] is None:
        return None if effects.get("rows") == 0 else f"commit record {name} names no effects file"
    expected = effects_path(unit, width)
    if effects["file"] != expected:
        return f"commit record {name} names the effects file {effects['file']!r}, not {expected}"
    file = out / expected
    if not file.is_file():
        return f"effects file {expected} is missing"
    size, recorded = file.stat().st_size, effects.get("bytes")
    if recorded is not None and size != recorded:
        return f"effects file {expected} is {size} bytes, its record says {recorded}"
    if verify and effects.get("sha256") is not None:
        digest = hashlib.sha256()
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != effects["sha256"]:
            return f"effects file {expected} does not match the sha256 in its record"
    return None


def make_pending(out: Path, unit: int, width: int) -> None:
    """Delete a damaged unit's record (durably), then its effects file."""
    record_file(out, unit, width).unlink(missing_ok=True)
    fsync_dir(out / UNITS_DIR)
    (out / effects_path(unit, width)).unlink(missing_ok=True)
