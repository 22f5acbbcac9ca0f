"""ActivationStore: read a store back as numpy, Arrow and pandas.

The store is plain Zarr + Parquet (docs/store-format.md), so this class only adds
conveniences: rows given as a slice or an index array, bfloat16 widened to float32, token
rows read only from the row groups that hold them (plan_index.py), and `verify()`.

A store whose capture has not finished holds zero fill where units are pending. Reading
activations from it (`read`, `iter_batches`, `to_pandas`) raises `UnfinishedStoreError`
("N of M units committed", and the command that finishes it), so no analysis ever takes
the zero fill for data. `ActivationStore.open(path, partial=True)` opts in to the committed
units only: `data_units()` and `data_row_runs()` say which, `iter_batches` yields only
their rows, and reading a row of a pending unit raises. Token and docs tables are complete
as soon as the store exists (they are planned first) and are always readable.

`to_pandas` puts each hook in one column of `pd.ArrowDtype(fixed_size_list<float32>[d])`:
compact (one contiguous buffer, no Python object per row), it survives `df.to_parquet`,
and `np.stack(df[hook].to_numpy())` gives back the [rows, d] matrix.

Legend: N rows selected, D width of a hook.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import zarr

from pipeline.store.dtypes import to_float32
from pipeline.store.layout import DOCS_DIR, SUCCESS, TOKENS_DIR, ZARR_DIR
from pipeline.store.location import read_parquet_folder, store_path, zarr_store
from pipeline.store.manifest import committed_units, read_record
from pipeline.store.meta import NotAStoreError, read_store_json
from pipeline.store.plan import TOKEN_SCHEMA
from pipeline.store.plan_index import PlanIndex

Rows = slice | Sequence[int] | np.ndarray | None


class UnfinishedStoreError(NotAStoreError):
    """The store's capture has not finished: some units hold no data yet."""

    def __init__(self, root: Path, num_committed: int, num_units: int, command: str | None):
        self.num_committed, self.num_units = num_committed, num_units
        finish = f": {command}" if command else " with the same config and --out"
        super().__init__(
            f"the store {root} is unfinished: {num_committed} of {num_units} units committed "
            f"(the rest are zero fill, not data). Finish it by running its capture again"
            f"{finish}; or read only the committed units with ActivationStore.open(path, "
            "partial=True) / the job's --partial flag"
        )


class ActivationStore:
    """A store opened for reading. Build it with `ActivationStore.open(path)`."""

    def __init__(self, root: Path, meta: dict[str, Any], partial: bool = False) -> None:
        self.root = root
        self.meta = meta
        self.partial = partial
        self._finished = False
        self._committed: set[int] = set()
        self.hooks: list[str] = list(meta["hooks"])
        self.num_rows: int = meta["num_rows"]
        self.num_units: int = meta["num_units"]
        self.rows_per_unit: int = meta["rows_per_unit"]
        self.dtype: str = meta["dtype"]
        self._width: int = meta["unit_name_width"]
        self.index = PlanIndex.from_store_json(root, meta)
        try:
            self._group = zarr.open_group(zarr_store(root / ZARR_DIR), mode="r")
        except FileNotFoundError as e:
            raise NotAStoreError(f"{root} has store.json but no readable {ZARR_DIR}") from e

    @classmethod
    def open(cls, path: str | os.PathLike, partial: bool = False) -> ActivationStore:
        """Open a store; `partial=True` allows reading the committed units of an
        unfinished one (only those: rows of pending units raise instead of reading zeros).
        `path` may be a URL (`s3://bucket/prefix`: pipeline/store/location.py)."""
        root = store_path(path)
        return cls(root, read_store_json(root), partial)

    @property
    def finished(self) -> bool:
        """Whether the capture finished (every unit committed and `_SUCCESS` written)."""
        if not self._finished:
            self._finished = (self.root / SUCCESS).is_file()
        return self._finished

    def data_units(self) -> list[int]:
        """Units whose activations may be read: every unit of a finished store; the
        committed ones of an unfinished store opened with partial=True; else it raises."""
        if self.finished:
            return list(range(self.num_units))
        committed = self.committed_units()
        if len(committed) == self.num_units:
            return list(range(self.num_units))
        if not self.partial:
            raise UnfinishedStoreError(
                self.root, len(committed), self.num_units, self.meta.get("command")
            )
        return sorted(committed)

    def data_row_runs(self) -> list[tuple[int, int]]:
        """[start, stop) row ranges of `data_units()`, adjacent units merged."""
        runs: list[tuple[int, int]] = []
        for unit in self.data_units():
            start, stop = self.index.unit_rows(unit)
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        return runs

    def d(self, hook: str) -> int:
        return int(self._hook(hook)["d"])

    def activations(self, hook: str) -> zarr.Array:
        """The lazy Zarr array [num_rows, d] in its stored dtype (uint16 bits for bfloat16)."""
        self._hook(hook)
        return self._group[hook]

    def read(self, hook: str, rows: Rows = None) -> np.ndarray:
        """float32 [N, D] for rows given as a slice, an int index array, or None (all)."""
        array = self.activations(hook)
        selection = self._normalize_rows(rows)
        self._require_data(selection)
        if isinstance(selection, slice):
            stored = array[selection]
        elif len(selection) == 0:
            stored = np.zeros((0, self.d(hook)), dtype=array.dtype)
        else:
            order = np.argsort(selection, kind="stable")
            stored = np.empty((len(selection), self.d(hook)), dtype=array.dtype)
            stored[order] = array.get_orthogonal_selection((selection[order], slice(None)))
        return to_float32(stored, self._hook(hook)["logical_dtype"])

    def iter_batches(self, hook: str, num_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 [<= num_rows, D]) batches in row order (of a partial
        store, only the committed units' rows: check the first row of each batch)."""
        if num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {num_rows}")
        for run_start, run_stop in self.data_row_runs():
            for start in range(run_start, run_stop, num_rows):
                yield start, self.read(hook, slice(start, min(start + num_rows, run_stop)))

    def tokens(self, rows: Rows = None) -> pa.Table:
        """The token table (row, doc_id, window, position, token_id, is_special, token)."""
        if rows is None:
            table = read_parquet_folder(self.root / TOKENS_DIR)
            return table if _ascending(table) else table.sort_by("row")
        selection = self._normalize_rows(rows)
        if isinstance(selection, slice):
            return self.index.read_rows(selection.start, selection.stop)
        if len(selection) == 0:
            return TOKEN_SCHEMA.empty_table()
        # Read unit by unit and keep only the rows asked for, so scattered rows never pull
        # in the span between them and memory holds one unit's table at a time.
        order = np.argsort(selection, kind="stable")
        ordered = selection[order]
        unit_of = ordered // self.rows_per_unit
        bounds = np.flatnonzero(np.diff(unit_of)) + 1
        pieces = []
        for rows in np.split(ordered, bounds):
            start, stop = self.index.unit_rows(int(rows[0] // self.rows_per_unit))
            pieces.append(self.index.read_rows(start, stop).take(pa.array(rows - start)))
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return pa.concat_tables(pieces).take(pa.array(back))

    def docs(self) -> pa.Table:
        """doc_id, source, text, num_tokens of every document read from the corpus."""
        table = read_parquet_folder(self.root / DOCS_DIR)
        return table if _ascending(table, "doc_id") else table.sort_by("doc_id")

    def to_pandas(self, hooks: Sequence[str] | None = None, rows: Rows = None) -> pd.DataFrame:
        """Token rows with one fixed_size_list<float32>[d] column per hook."""
        hooks = self.hooks if hooks is None else list(hooks)
        table = self.tokens(rows)
        for hook in hooks:
            values_ND = self.read(hook, rows if rows is not None else slice(None))
            column = pa.FixedSizeListArray.from_arrays(
                pa.array(values_ND.reshape(-1)), self.d(hook)
            )
            table = table.append_column(hook, column)
        return table.to_pandas(
            types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_fixed_size_list(t) else None
        )

    def committed_units(self) -> set[int]:
        return {u for u in committed_units(self.root) if u < self.num_units}

    def pending_units(self) -> list[int]:
        done = self.committed_units()
        return [u for u in range(self.num_units) if u not in done]

    def unit_record(self, unit: int) -> dict[str, Any]:
        """The commit record of a committed unit."""
        return read_record(self.root, unit, self._width)

    def verify(self, check_data: bool = True) -> dict[str, Any]:
        """Check the store is complete and intact; raise StoreVerificationError if not."""
        from pipeline.store.verify import verify_store

        return verify_store(self, check_data=check_data)

    def _require_data(self, selection: slice | np.ndarray) -> None:
        """Raise unless every selected row lies in a unit that holds data."""
        if self.finished:
            return
        if isinstance(selection, slice):
            if selection.stop <= selection.start:
                return
            first = selection.start // self.rows_per_unit
            units = range(first, (selection.stop - 1) // self.rows_per_unit + 1)
        else:
            units = np.unique(selection // self.rows_per_unit).tolist()
        if all(unit in self._committed for unit in units):
            return
        self._committed = set(self.data_units())  # raises unless finished or partial
        pending = [unit for unit in units if unit not in self._committed]
        if pending:  # only a partial store gets here: data_units() raised otherwise
            raise ValueError(
                f"rows requested from {self.root} lie in units {pending[:10]} that are not "
                "committed yet (the store is unfinished; data_row_runs() lists the rows that "
                "hold data)"
            )

    def _hook(self, hook: str) -> dict[str, Any]:
        if hook not in self.meta["hooks"]:
            raise KeyError(f"no hook {hook!r} in {self.root}; hooks: {self.hooks}")
        return self.meta["hooks"][hook]

    def _normalize_rows(self, rows: Rows) -> slice | np.ndarray:
        if rows is None:
            return slice(0, self.num_rows)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.num_rows)
            if step != 1:
                return np.arange(start, stop, step, dtype=np.int64)
            return slice(start, max(start, stop))
        index = np.asarray(rows)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise ValueError("rows must be a slice or a 1-D array of integer row indices")
        index = index.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.num_rows):
            raise IndexError(f"row indices must be in [0, {self.num_rows})")
        return index


def _ascending(table: pa.Table, column: str = "row") -> bool:
    rows = table.column(column).to_numpy()
    return bool(np.all(rows[1:] > rows[:-1]))
