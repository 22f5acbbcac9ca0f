"""Find and read any row range of a store's token table, from O(parts) state.

The token table lives in one Parquet file per plan part (`tokens/part-N.parquet`), parts
being corpus shards, so a 10^9-row store has hundreds of token files, not one per unit.
`PlanIndex` knows only each part's first row; reading rows [a, b) opens the parts that
overlap and decodes only the row groups that do (groups are aligned to units).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.layout import tokens_part_file
from pipeline.store.location import parquet_file
from pipeline.store.plan import TOKEN_SCHEMA, unit_rows

_OPEN_FILES = 8


class PlanIndex:
    """Row ranges of the parts of a planned store (from store.json) and of its units."""

    def __init__(
        self,
        root: Path,
        parts: Sequence[dict[str, int]],
        num_rows: int,
        rows_per_unit: int,
        part_name_width: int,
    ) -> None:
        self.root = root  # a Path, or a UPath for a store on object storage
        self.num_rows = num_rows
        self.rows_per_unit = rows_per_unit
        self.part_name_width = part_name_width
        nonempty = [p for p in parts if p["row_stop"] > p["row_start"]]
        self.part_ids = np.array([p["part"] for p in nonempty], dtype=np.int64)
        self.part_starts = np.array([p["row_start"] for p in nonempty], dtype=np.int64)
        self._files: OrderedDict[int, tuple[pq.ParquetFile, np.ndarray]] = OrderedDict()

    @classmethod
    def from_store_json(cls, root: Path, store_json: dict[str, Any]) -> PlanIndex:
        return cls(
            root,
            store_json["parts"],
            store_json["num_rows"],
            store_json["rows_per_unit"],
            store_json["part_name_width"],
        )

    @property
    def num_units(self) -> int:
        return -(-self.num_rows // self.rows_per_unit)

    def close(self) -> None:
        """Close the token files kept open (a failed run must not pin its folder)."""
        for parquet, _ in self._files.values():
            parquet.close()
        self._files.clear()

    def unit_rows(self, unit: int) -> tuple[int, int]:
        return unit_rows(unit, self.rows_per_unit, self.num_rows)

    def read_rows(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Token rows [start, stop) in order (all TOKEN_SCHEMA columns, or `columns`)."""
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows must satisfy 0 <= start <= stop <= {self.num_rows}")
        schema = (
            TOKEN_SCHEMA if columns is None else pa.schema([TOKEN_SCHEMA.field(c) for c in columns])
        )
        if start == stop:
            return schema.empty_table()
        first = int(np.searchsorted(self.part_starts, start, side="right")) - 1
        last = int(np.searchsorted(self.part_starts, stop - 1, side="right")) - 1
        tables = [self._read_part(i, start, stop, columns) for i in range(first, last + 1)]
        return pa.concat_tables(tables).cast(schema)

    def _read_part(self, i: int, start: int, stop: int, columns) -> pa.Table:
        parquet, group_starts = self._open(i)
        lo, hi = max(start, int(group_starts[0])), min(stop, int(group_starts[-1]))
        first = int(np.searchsorted(group_starts, lo, side="right")) - 1
        last = int(np.searchsorted(group_starts, hi - 1, side="right")) - 1
        groups = list(range(first, last + 1))
        table = parquet.read_row_groups(groups, columns=list(columns) if columns else None)
        return table.slice(lo - int(group_starts[first]), hi - lo)

    def _open(self, i: int) -> tuple[pq.ParquetFile, np.ndarray]:
        """The part's ParquetFile and its row groups' first rows (plus the part's end)."""
        if i in self._files:
            self._files.move_to_end(i)
            return self._files[i]
        path = tokens_part_file(self.root, int(self.part_ids[i]), self.part_name_width)
        parquet = parquet_file(path)
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        group_starts = int(self.part_starts[i]) + np.concatenate([[0], np.cumsum(sizes)])
        self._files[i] = (parquet, group_starts.astype(np.int64))
        if len(self._files) > _OPEN_FILES:
            self._files.popitem(last=False)
        return self._files[i]
