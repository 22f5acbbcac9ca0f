"""Commit records: `units/unit-N.json` is written last, and its presence is the commit.

A unit is committed when, and only when, its record exists. The record is written via a
hidden temp file, fsync and rename (meta.write_json_atomic), after the unit's Zarr shards
are in place; so a crash at any earlier point leaves the unit pending and
a rerun redoes it, rewriting the same bytes. Listing names is enough to know what is
committed; `verify()` reads the records and checks their checksums against the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.store.layout import FORMAT_VERSION, UNITS_DIR, parse_unit_stem, record_file
from pipeline.store.location import is_url
from pipeline.store.meta import write_json_atomic


class InconsistentCommitError(ValueError):
    """Two attempts at one unit committed different bytes (object storage only, where the
    second attempt's create fails and finds the first's record)."""


def commit_record(
    path: Path, record: dict[str, Any], identity: Callable[[dict[str, Any]], Any], what: str
) -> None:
    """Write a unit's commit record: the one commit protocol of stores and of the outputs
    that follow them (intervention effects).

    Locally: atomically (temp, fsync, rename); an attempt presumed dead that commits later
    replaces the record with one naming the same files. On object storage the record is
    created only if absent (If-None-Match): when another attempt committed first, its
    record must name the same bytes (`identity(record)`: the data's checksums), else the
    unit is refused as inconsistent.
    """
    if not is_url(path):
        write_json_atomic(path, record)
        return
    try:
        write_json_atomic(path, record, exclusive=True)
    except FileExistsError:
        committed = json.loads(path.read_text())
        if identity(committed) != identity(record):
            raise InconsistentCommitError(
                f"{what} was committed by another attempt with different bytes: the "
                "computation is not deterministic across attempts; verify the output "
                "(python -m jobs.inspect) and recompute that unit"
            ) from None


def committed_units(root: Path) -> set[int]:
    """Units whose commit record exists (hidden temps and stray files are ignored)."""
    folder = root / UNITS_DIR
    if not folder.is_dir():
        return set()
    units = set()
    for path in folder.iterdir():
        unit = parse_unit_stem(path.name)
        if unit is not None and path.name.endswith(".json"):
            units.add(unit)
    return units


def read_record(root: Path, unit: int, width: int) -> dict[str, Any]:
    return json.loads(record_file(root, unit, width).read_text())


def build_record(
    *,
    unit: int,
    rows: tuple[int, int],
    windows: tuple[int, int],
    arrays: dict[str, dict[str, Any]],
    timing: dict[str, Any],
    attempt: dict[str, Any],
    pipeline_version: str,
) -> dict[str, Any]:
    """The JSON payload of a commit record (see docs/store-format.md)."""
    start, stop = rows
    return {
        "format_version": FORMAT_VERSION,
        "unit": unit,
        "row_start": start,
        "row_stop": stop,
        "num_rows": stop - start,
        "window_start": windows[0],
        "window_stop": windows[1],
        "arrays": arrays,
        "timing": timing,
        "attempt": attempt,
        "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pipeline_version": pipeline_version,
    }
