"""StoreWriter: write units of activations exactly once, from at-least-once execution.

Per unit, in this order: (1) each hook's Zarr shard (whole shards only, so no two writers
ever share a file, and rewriting is harmless), (2) the commit record `units/unit-N.json`,
via temp + fsync + rename. Only (2) makes the unit committed; a crash before it leaves the
unit pending and the next run rewrites the same bytes. With `fsync=True` (the default) the
shards are fsynced before the record is written, so a committed unit survives a power
loss. The token table is not written here: it was written, part by part, when the store
was planned (see planner.py), before any unit ran.

Legend: R rows in the unit, D width of a hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.store.create import begin_store, build_fingerprint, consolidate, create_store
from pipeline.store.dtypes import stored_dtype
from pipeline.store.layout import (
    SUCCESS,
    TMP_SUFFIX,
    ZARR_DIR,
    part_record_file,
    record_file,
)
from pipeline.store.location import abort_unfinished_uploads, is_url, store_path, zarr_store
from pipeline.store.manifest import build_record, commit_record, committed_units
from pipeline.store.meta import pipeline_version, read_store_json, write_json_atomic
from pipeline.store.plan import PlanConfig
from pipeline.store.plan_index import PlanIndex
from pipeline.store.planner import PlanResult
from pipeline.store.shards import direct_write_supported, write_shard


class UnitWriteError(OSError):
    """Writing a unit failed on disk; the unit stays pending. `errno` is the original's."""


def _planned(root: Path, plan: Callable[[Path], PlanResult]) -> PlanResult:
    """`plan(root)`, with a disk error saying what a rerun does."""
    try:
        return plan(root)
    except OSError as e:
        raise OSError(
            e.errno,
            f"planning the store {root} stopped: {e.strerror or e}. The parts already "
            "written are committed and kept; free the space (or fix the cause) and run the "
            "same command again to resume planning",
            e.filename,
        ) from e


class StoreWriter:
    """Writes the units of one store. Build it with `StoreWriter.create_or_open`."""

    def __init__(self, root: Path, store_json: dict[str, Any], fsync: bool = True):
        self.root = root
        self.store_json = store_json
        self.index = PlanIndex.from_store_json(root, store_json)
        self.fsync = fsync
        self.hooks: dict[str, int] = {name: h["d"] for name, h in store_json["hooks"].items()}
        self.dtype: str = store_json["dtype"]
        self._stored = stored_dtype(self.dtype)
        self._width: int = store_json["unit_name_width"]
        group = zarr.open_group(zarr_store(root / ZARR_DIR, read_only=False), mode="r+")
        self._arrays = {name: group[name] for name in self.hooks}
        self._direct = {name: direct_write_supported(a) for name, a in self._arrays.items()}
        self._pool = ThreadPoolExecutor(
            max_workers=min(8, 2 * len(self.hooks)), thread_name_prefix="shard"
        )
        self.repairs: list[str] = []  # what `recheck` found damaged and redoes

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike,
        meta: dict[str, Any],
        hooks: dict[str, int],
        dtype: str,
        config: PlanConfig,
        plan: Callable[[Path], PlanResult],
        overwrite: bool = False,
        fsync: bool = True,
        verify: bool = False,
        command: str | None = None,
    ) -> StoreWriter:
        """Create the store (planning it with `plan(root)`), or open it to resume if its
        fingerprint equals this run's; an unfinished planning is resumed by `plan`.

        Reopening checks what the rerun would trust (`recheck`): damaged parts are planned
        again and damaged units made pending; `repairs` lists what was found.

        meta: what decides the bytes besides hooks, dtype and `config` (model id, weights
            hash, tokenizer, corpus fingerprint, ...); JSON values. hooks: name -> width d.
        dtype: "float32", "float16" or "bfloat16". overwrite: delete an existing store first.
        verify: also hash every committed unit's data and every part's files (slow: reads
            the whole store) instead of checking file sizes only.
        command: the shell command that finishes this store, recorded for readers.
        Raises StoreMismatchError (a ValueError) naming every differing field, before any
        corpus is read. Not safe for concurrent creation: create once, then `open`.
        """
        root = store_path(path)  # a folder, or an s3:// prefix (pipeline/store/location.py)
        fingerprint = build_fingerprint(meta, hooks, dtype, config)
        store_json = begin_store(root, fingerprint, overwrite, command)
        if store_json is None:
            store_json = create_store(root, fingerprint, hooks, dtype, config, _planned(root, plan))
            return cls(root, store_json, fsync)
        writer = cls(root, store_json, fsync)
        writer.repairs = writer.recheck(verify, lambda: plan(root))
        return writer

    @classmethod
    def open(cls, path: str | os.PathLike, fsync: bool = True) -> StoreWriter:
        """Open a store the driver created, from a worker: never creates or deletes."""
        root = store_path(path)
        return cls(root, read_store_json(root), fsync)

    def recheck(self, verify: bool, replan: Callable[[], PlanResult]) -> list[str]:
        """Check every committed part and unit before a rerun skips it; redo the damaged.

        Cheap by default: each record parses and names its rows, and each file it names
        exists with the recorded size (one stat per file; no data is read). `verify` also
        hashes the data. A damaged part's record is removed and `replan` plans from it
        again (same corpus, same bytes: the plan fingerprint must come out equal); a
        damaged unit's record is removed, so it is pending and this run recomputes it.
        Returns one line per damaged part or unit, saying what was wrong.
        """
        from pipeline.store.reader import ActivationStore
        from pipeline.store.verify import part_problems, unit_problems

        reader = ActivationStore(self.root, self.store_json, partial=True)
        bad_parts, bad_units = {}, {}
        for part in self.store_json["parts"]:
            problems, _ = part_problems(reader, part, verify)
            if problems:
                bad_parts[part["part"]] = problems
        for unit in sorted(self.committed_units()):
            problems, _ = unit_problems(reader, unit, verify)
            if problems:
                bad_units[unit] = problems
        if not bad_parts and not bad_units:
            return []
        (self.root / SUCCESS).unlink(missing_ok=True)  # readers must not take it as finished
        repairs = [f"{'; '.join(p)}: planning part {i} again" for i, p in bad_parts.items()]
        repairs += [f"{'; '.join(p)}: recomputing unit {u}" for u, p in bad_units.items()]
        if bad_parts:
            for index in bad_parts:
                part_record_file(self.root, index, self.store_json["part_name_width"]).unlink(
                    missing_ok=True
                )
            result = replan()
            if result.fingerprint != self.store_json["plan_fingerprint"]:
                raise ValueError(
                    f"planning the damaged parts of {self.root} again gave a different plan: the "
                    "corpus changed since the store was made. Capture into a new folder (or "
                    "with --overwrite)"
                )
        for unit in bad_units:
            record_file(self.root, unit, self._width).unlink(missing_ok=True)
        return repairs

    def close(self) -> None:
        """Release the writer's threads and open token files (safe to call twice)."""
        self._pool.shutdown(wait=True)
        self.index.close()

    @property
    def num_units(self) -> int:
        return self.index.num_units

    @property
    def num_rows(self) -> int:
        return self.index.num_rows

    def committed_units(self) -> set[int]:
        return {u for u in committed_units(self.root) if u < self.num_units}

    def pending_units(self) -> list[int]:
        """Units without a commit record, in order."""
        done = self.committed_units()
        return [u for u in range(self.num_units) if u not in done]

    def write_unit(
        self,
        unit: int,
        activations: dict[str, np.ndarray],
        timing: dict[str, Any] | None = None,
        attempt: dict[str, Any] | None = None,
        windows: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Write and commit one unit; returns its commit record.

        activations[hook]: [R, D] array of the stored dtype (float32, float16, or for
        bfloat16 the raw bits as uint16, e.g. `tensor.view(torch.uint16).numpy()`).
        timing / attempt: JSON-able dicts copied into the record (e.g. forward seconds,
        worker id, attempt number); host and pid are added to attempt.
        windows: (first, last + 1) windows of the unit, if the caller knows them.
        """
        start, stop = self.index.unit_rows(unit)
        arrays_RD = self._check(unit, stop - start, activations)
        for name, extra in (("timing", timing), ("attempt", attempt)):
            try:
                json.dumps(extra)
            except TypeError as e:
                raise ValueError(f"unit {unit}: {name} must be JSON-serialisable: {e}") from e
        record_path = record_file(self.root, unit, self._width)
        current = self.root
        began = time.perf_counter()
        try:
            # Every hook's shard is written, and every checksum computed, in its own
            # thread: file I/O and sha256 release the GIL, so a unit takes about as long
            # as its largest hook instead of the sum of all of them.
            writes = {
                name: self._pool.submit(self._write_array_at, name, unit, start, stop, data_RD)
                for name, data_RD in arrays_RD.items()
            }
            digests = {
                name: self._pool.submit(lambda data: hashlib.sha256(data.data).hexdigest(), data_RD)
                for name, data_RD in arrays_RD.items()
            }
            if windows is None:
                window = self.index.read_rows(start, stop, ["window"]).column(0)
                windows = (window[0].as_py(), window[-1].as_py() + 1)
            wait_for([*writes.values(), *digests.values()])
            checksums = {}
            for name, data_RD in arrays_RD.items():
                current = self._shard_path(name, unit)
                writes[name].result()
                checksums[name] = {
                    "sha256": digests[name].result(),
                    "shape": list(data_RD.shape),
                    "stored_dtype": self._stored.name,
                    # A rerun checks the file exists with this size before trusting the unit.
                    "file": current.relative_to(self.root).as_posix(),
                    "bytes": current.stat().st_size,
                }
            zarr_s = time.perf_counter() - began
            record = build_record(
                unit=unit,
                rows=(start, stop),
                windows=windows,
                arrays=checksums,
                timing={
                    **(timing or {}),
                    "store_zarr_s": round(zarr_s, 6),
                    "store_total_s": round(time.perf_counter() - began, 6),
                },
                attempt={"host": socket.gethostname(), "pid": os.getpid(), **(attempt or {})},
                pipeline_version=pipeline_version(),
            )
            current = record_path
            commit_record(record_path, record, _array_checksums, f"unit {unit} of {self.root}")
        except OSError as e:
            raise UnitWriteError(
                e.errno,
                f"could not write unit {unit} of store {self.root} (while writing {current}): "
                f"{e.strerror or e}. No commit record was written: the unit stays pending "
                "and a rerun redoes it",
            ) from e
        return record

    def finalize(self) -> dict[str, Any]:
        """After every unit is committed: remove stale temps, consolidate, write _SUCCESS."""
        pending = self.pending_units()
        if pending:
            shown = ", ".join(map(str, pending[:20])) + (" ..." if len(pending) > 20 else "")
            raise ValueError(
                f"cannot finalize {self.root}: {len(pending)} of {self.num_units} units "
                f"are not committed (units {shown}); run the capture again to finish them"
            )
        self._remove_stale_temps()
        consolidate(self.root)
        success = {
            "num_rows": self.num_rows,
            "num_units": self.num_units,
            "hooks": self.hooks,
            "dtype": self.dtype,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(self.root / SUCCESS, success)
        return success

    def _check(
        self, unit: int, num_rows: int, activations: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Validate every hook's array before anything is written."""
        if set(activations) != set(self.hooks):
            missing = sorted(set(self.hooks) - set(activations))
            extra = sorted(set(activations) - set(self.hooks))
            raise ValueError(f"unit {unit}: activations missing hooks {missing}, unknown {extra}")
        checked = {}
        for name, d in self.hooks.items():
            data = activations[name]
            if not isinstance(data, np.ndarray):
                raise ValueError(
                    f"unit {unit}, hook {name!r}: expected a numpy array, got {type(data).__name__}"
                )
            if data.shape != (num_rows, d):
                raise ValueError(
                    f"unit {unit}, hook {name!r}: expected shape {(num_rows, d)}, got {data.shape}"
                )
            if data.dtype.newbyteorder("=") != self._stored.newbyteorder("="):
                hint = (
                    " (bfloat16 is passed as its raw uint16 bits)"
                    if self.dtype == "bfloat16"
                    else ""
                )
                raise ValueError(
                    f"unit {unit}, hook {name!r}: expected dtype {self._stored.name} for a "
                    f"{self.dtype} store{hint}, got {data.dtype}"
                )
            checked[name] = np.ascontiguousarray(data, dtype=self._stored)
        return checked

    def _shard_path(self, name: str, unit: int) -> Path:
        key = self._arrays[name].metadata.encode_chunk_key((unit, 0))
        return self.root / ZARR_DIR / name / key

    def _write_array_at(
        self, name: str, unit: int, start: int, stop: int, data_RD: np.ndarray
    ) -> None:
        try:
            self._write_array(name, unit, start, stop, data_RD)
        except OSError as e:
            e.filename = e.filename or str(self._shard_path(name, unit))
            raise

    def _write_array(
        self, name: str, unit: int, start: int, stop: int, data_RD: np.ndarray
    ) -> None:
        array = self._arrays[name]
        if self._direct[name]:
            write_shard(
                self._shard_path(name, unit),
                data_RD,
                shard_rows=array.metadata.chunk_grid.chunk_shape[0],
                chunk_rows=array.metadata.codecs[0].chunk_shape[0],
                fsync=self.fsync,
            )
        else:  # zarr's own (slower) path, should its shard layout ever differ from ours
            array.with_config({"write_empty_chunks": True})[start:stop] = data_RD

    def _remove_stale_temps(self) -> None:
        """Temps left by killed attempts (hidden, so no reader ever saw them); on object
        storage, the multipart uploads they left unfinished."""
        if is_url(self.root):
            abort_unfinished_uploads(self.root)
            return
        for path in self.root.rglob(f".*{TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
        for path in (self.root / ZARR_DIR).rglob("*.partial"):
            path.unlink(missing_ok=True)


def _array_checksums(record: dict[str, Any]) -> dict[str, str]:
    """What identifies a store unit's bytes: each hook's shard sha256."""
    return {name: entry["sha256"] for name, entry in record["arrays"].items()}
