"""The unit worker: one model replica that turns a unit number into a committed unit.

Plain Python, no Ray: single-process capture drives it in a loop, the Ray layer wraps it
in an actor. Activations never leave the worker except as bytes on disk: each batch is
cast to the store dtype on the device, copied into a unit buffer (pinned memory on GPUs,
non-blocking copies), and the writer commits the whole unit at once.

On a GPU, writing a unit (checksums, Parquet, fsync) overlaps computing the next:
`process` holds a lock only while it computes, so two calls in two threads form a
two-stage pipeline (`process_units`) with at most two unit buffers alive.

Within a unit, windows are batched longest first so batches carry little padding; the
order only depends on the plan, so every run of a unit computes the same bytes.

Legend: B windows in a batch, T padded length, D hook width, R rows in the unit.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import faults
from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import deepest_hook, load_model
from pipeline.hooks import Detector
from pipeline.model import LanguageModel
from pipeline.store.plan_index import PlanIndex
from pipeline.store.writer import StoreWriter

_TORCH_STORE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class RowCopy:
    """Copy `out[batch_row, start:stop]` to `buffer[dest : dest + stop - start]`."""

    batch_row: int
    start: int
    stop: int
    dest: int


class UnitBufferDetector(Detector):
    """Copies the rows a unit owns from each batch into that unit's buffer."""

    def __init__(self, layer_signature: str, buffer_RD: torch.Tensor):
        super().__init__(layer_signature=layer_signature)
        self.buffer_RD = buffer_RD
        self.copies: list[RowCopy] = []

    def process_activations(self, module, input, output) -> None:
        out_BTD = output.detach().to(self.buffer_RD.dtype)
        non_blocking = self.buffer_RD.is_pinned()
        for c in self.copies:
            self.buffer_RD[c.dest : c.dest + c.stop - c.start].copy_(
                out_BTD[c.batch_row, c.start : c.stop], non_blocking=non_blocking
            )


@dataclass(frozen=True)
class UnitWindows:
    """Every window with a row in a unit, read from the store's token table."""

    starts: np.ndarray  # int64 [W] global first row of each window
    lengths: np.ndarray  # int64 [W]
    ids: np.ndarray  # int64 [W] window ids
    token_ids: np.ndarray  # int32, rows [starts[0], starts[-1] + lengths[-1])

    def tokens(self, i: int) -> np.ndarray:
        offset = int(self.starts[i] - self.starts[0])
        return self.token_ids[offset : offset + int(self.lengths[i])]


def read_unit_windows(index: PlanIndex, unit: int, context_length: int) -> UnitWindows:
    """A unit's windows, whole: a window is at most context_length rows, so reading that
    many rows beyond each end of the unit is enough."""
    start, stop = index.unit_rows(unit)
    lo, hi = max(0, start - context_length), min(index.num_rows, stop + context_length)
    table = index.read_rows(lo, hi, ["window", "token_id"])
    window = table.column("window").to_numpy()
    keep = (window >= window[start - lo]) & (window <= window[stop - 1 - lo])
    first, last = int(np.argmax(keep)), len(keep) - int(np.argmax(keep[::-1]))
    window = window[first:last]
    bounds = np.flatnonzero(np.r_[True, window[1:] != window[:-1], True])
    return UnitWindows(
        starts=lo + first + bounds[:-1],
        lengths=np.diff(bounds),
        ids=window[bounds[:-1]],
        token_ids=table.column("token_id").to_numpy()[first:last],
    )


def plan_batches(windows: UnitWindows, batch_size: int) -> list[list[int]]:
    """Indices of the unit's windows, longest first (stable), cut into batches."""
    ordered = np.argsort(-windows.lengths, kind="stable").tolist()
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


class UnitWorker:
    """Hosts a model replica and writes units of one store.

    The store must exist (the driver creates it); the worker opens it for writing.
    """

    def __init__(
        self,
        config: CaptureConfig,
        store_path: str | Path,
        lm: LanguageModel | None = None,
        worker_id: str = "0",
    ):
        self.config = config
        self.worker_id = worker_id
        self.lm = lm if lm is not None else load_model(config)
        self.writer = StoreWriter.open(store_path)
        self.index = self.writer.index
        self.widths = self.writer.hooks
        self.stop_after = deepest_hook(self.lm, config.hooks)
        self._compute_lock = threading.Lock()
        self._buffers_lock = threading.Lock()
        self._free_buffers: list[dict[str, torch.Tensor]] = []

    def process(self, unit: int, attempt: int = 0) -> dict:
        """Compute and commit one unit; returns its commit record.

        Thread-safe: computing is serialized, the write runs outside the lock.
        """
        buffers = self._take_buffers()
        try:
            with self._compute_lock:
                activations, windows, timing = self._compute(unit, buffers)
            return self.writer.write_unit(
                unit,
                activations,
                windows=windows,
                timing=timing,
                attempt={"worker": self.worker_id, "pid": os.getpid(), "attempt": attempt},
            )
        finally:
            with self._buffers_lock:
                self._free_buffers.append(buffers)

    def _take_buffers(self) -> dict[str, torch.Tensor]:
        """A unit's worth of host buffers, reused across units (pinning memory is slow)."""
        with self._buffers_lock:
            if self._free_buffers:
                return self._free_buffers.pop()
        dtype = _TORCH_STORE_DTYPES[self.config.dtype]
        pin = self.lm.device.type == "cuda"
        rows = self.index.rows_per_unit
        return {
            hook: torch.empty((rows, d), dtype=dtype, pin_memory=pin)
            for hook, d in self.widths.items()
        }

    def _compute(
        self, unit: int, unit_buffers: dict[str, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], tuple[int, int], dict]:
        began = time.perf_counter()
        start, stop = self.index.unit_rows(unit)
        windows = read_unit_windows(self.index, unit, self.config.context_length)
        device = self.lm.device
        pin = device.type == "cuda"
        buffers = {hook: buffer[: stop - start] for hook, buffer in unit_buffers.items()}
        detectors = [UnitBufferDetector(hook, buffers[hook]) for hook in self.config.hooks]
        forward_s = 0.0
        with self.lm.layers.hooks(*detectors):
            for batch_index, batch in enumerate(plan_batches(windows, self.config.batch_size)):
                ids_BT, mask_BT, copies = self._batch(windows, batch, start, stop)
                for detector in detectors:
                    detector.copies = copies
                faults.at_batch(unit, batch_index)  # tests only (pipeline/faults.py)
                t0 = time.perf_counter()
                self.lm.inference.forward_ids(
                    ids_BT.to(device), mask_BT.to(device), stop_after=self.stop_after
                )
                forward_s += time.perf_counter() - t0
        if pin:
            torch.cuda.synchronize(device)
        activations = {hook: _as_numpy(buffer) for hook, buffer in buffers.items()}
        timing = {
            "forward_s": round(forward_s, 6),
            "compute_s": round(time.perf_counter() - began, 6),
            # Peak memory of this worker's process so far: the scale benchmark reads it
            # from the commit records, as it cannot see into Ray's actor processes.
            "peak_rss_mb": peak_rss_mb(),
        }
        span = (int(windows.ids[0]), int(windows.ids[-1]) + 1)
        return activations, span, timing

    def _batch(self, windows: UnitWindows, batch: list[int], unit_start: int, unit_stop: int):
        width = int(windows.lengths[batch].max())
        ids_BT = torch.full((len(batch), width), self.lm.pad_token_id, dtype=torch.long)
        mask_BT = torch.zeros((len(batch), width), dtype=torch.long)
        copies = []
        for row, i in enumerate(batch):
            a = int(windows.starts[i])
            b = a + int(windows.lengths[i])
            ids_BT[row, : b - a] = torch.from_numpy(windows.tokens(i).astype(np.int64))
            mask_BT[row, : b - a] = 1
            lo, hi = max(a, unit_start), min(b, unit_stop)
            copies.append(RowCopy(batch_row=row, start=lo - a, stop=hi - a, dest=lo - unit_start))
        return ids_BT, mask_BT, copies


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Unlike getrusage's ru_maxrss, it
    starts afresh at exec, so a process started by a large parent reports its own peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _as_numpy(buffer_RD: torch.Tensor) -> np.ndarray:
    if buffer_RD.dtype == torch.bfloat16:
        return buffer_RD.view(torch.uint16).numpy()
    return buffer_RD.numpy()


def pipeline_depth(device: torch.device) -> int:
    """Units in flight in one process: 2 on a GPU (the CPU writes while the GPU computes),
    1 on a CPU, where a writer thread only competes with torch's threads (measured: 0.86
    vs 0.93 of the bare forward on 2 cores, see docs/performance.md)."""
    return 2 if device.type == "cuda" else 1


def process_units(worker: UnitWorker, units: list[int], depth: int | None = None) -> Iterator[dict]:
    """Commit `units` with up to `depth` in flight (compute one while writing another).

    Yields commit records in unit order; the first failure is raised after the units
    already in flight finished (their commits stand).
    """
    depth = depth or pipeline_depth(worker.lm.device)
    if depth == 1:
        for unit in units:
            yield worker.process(unit)
        return
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="unit") as pool:
        in_flight: deque[Future] = deque()
        for unit in units:
            in_flight.append(pool.submit(worker.process, unit))
            if len(in_flight) >= depth:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
