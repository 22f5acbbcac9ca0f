"""Commit records of an intervention output, and what a rerun checks before trusting one.

A unit is done when `units/unit-N.json` exists: `commit_unit` writes the effects file,
then the record through the store's commit protocol (`pipeline/store/manifest.py`:
atomic locally, create-if-absent on object storage, where a second attempt's record
must name the same effects bytes). But a finished output can be damaged afterwards (a record
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
import io
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.atomic import fsync_dir, write_atomic
from pipeline.store.layout import UNITS_DIR, record_file, unit_stem
from pipeline.store.location import store_path
from pipeline.store.manifest import commit_record

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


def commit_unit(
    out: str | Path,
    unit: int,
    width: int,
    table: pa.Table | None,
    fields: dict[str, Any],
    timing: dict[str, float],
) -> dict[str, Any]:
    """Write a unit's effects file (None: the unit has no windows), then its commit record
    (`fields` plus the effects file's description, timing and time); returns the record."""
    began = time.perf_counter()
    out = store_path(out)
    data = None
    if table is not None:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
        write_atomic(out / effects_path(unit, width), [data])
    rows = 0 if table is None else table.num_rows
    record = {
        "unit": unit,
        "effects": effects_entry(unit, width, data, rows),
        **fields,
        "timing": {
            **{k: round(v, 6) for k, v in timing.items()},
            "write_s": round(time.perf_counter() - began, 6),
        },
        "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    commit_record(
        record_file(out, unit, width),
        record,
        lambda r: r["effects"]["sha256"],
        f"unit {unit} of the intervention output {out}",
    )
    return record


def effects_rows(tokens: pa.Table, stage: int, columns: dict[str, np.ndarray]) -> pa.Table:
    """One stage's effect rows of a batch: its token columns, the stage, the effects."""
    table = tokens.append_column("stage", pa.array(np.full(tokens.num_rows, stage, dtype=np.int16)))
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    return table


def add_sums(sums: dict[str, list[float]], columns: dict[str, np.ndarray]) -> None:
    """Per column [sum, count] over the finite values (loss has none at window ends): the
    record keeps these, so the summary merges units without reading an effects file."""
    for name, values in columns.items():
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        total, count = sums.get(name, [0.0, 0])
        sums[name] = [total + float(values[finite].sum()), count + int(finite.sum())]


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
