"""File names of a store, in one place.

Every reader and writer builds paths through these helpers so the on-disk layout described
in docs/store-format.md has a single source of truth. Unit and part file names are zero-padded
to a width fixed per store (at least 5 digits) so lexicographic order, which
``pyarrow.dataset`` uses to order fragments, equals unit order.

Hidden names (leading ``.``) are used for every in-progress file: ``pyarrow.dataset``
and ``pandas.read_parquet`` skip files whose names start with ``.`` or ``_``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

FORMAT_VERSION = 2

STORE_JSON = "store.json"
DOCS_DIR = "docs"
TOKENS_DIR = "tokens"
PLAN_DIR = "plan"
PLAN_JSON = "plan.json"
UNITS_DIR = "units"
ZARR_DIR = "activations.zarr"
SUCCESS = "_SUCCESS"

# Entries a store directory may hold; `overwrite` only ever deletes directories made of these.
# A format 1 store also held docs.parquet: knowing it lets --overwrite replace such a store.
V1_DOCS_FILE = "docs.parquet"
KNOWN_ENTRIES = frozenset(
    {STORE_JSON, DOCS_DIR, TOKENS_DIR, PLAN_DIR, UNITS_DIR, ZARR_DIR, SUCCESS, V1_DOCS_FILE}
)

TMP_SUFFIX = ".tmp"


def unit_name_width(num_units: int) -> int:
    """Digits used in unit file names: 5, or more when the store has more units."""
    return max(5, len(str(max(num_units - 1, 0))))


def part_name_width(num_parts: int) -> int:
    """Digits used in part file names (fixed before planning from the shard count)."""
    return unit_name_width(num_parts)


def unit_stem(unit: int, width: int) -> str:
    return f"unit-{unit:0{width}d}"


def part_stem(part: int, width: int) -> str:
    return f"part-{part:0{width}d}"


def tokens_part_file(root: Path, part: int, width: int) -> Path:
    return root / TOKENS_DIR / f"{part_stem(part, width)}.parquet"


def docs_part_file(root: Path, part: int, width: int) -> Path:
    return root / DOCS_DIR / f"{part_stem(part, width)}.parquet"


def part_record_file(root: Path, part: int, width: int) -> Path:
    return root / PLAN_DIR / f"{part_stem(part, width)}.json"


def record_file(root: Path, unit: int, width: int) -> Path:
    return root / UNITS_DIR / f"{unit_stem(unit, width)}.json"


def temp_sibling(path: Path) -> Path:
    """A hidden, unique temp name beside `path`; unique so duplicate attempts never collide."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def parse_unit_stem(name: str, kind: str = "unit") -> int | None:
    """`unit-00012.json` -> 12 (`part-00003.json` with kind="part"); temps, strays -> None."""
    stem, _, _ = name.partition(".")
    if not stem.startswith(f"{kind}-") or name.startswith("."):
        return None
    digits = stem[len(kind) + 1 :]
    return int(digits) if digits.isdigit() else None
