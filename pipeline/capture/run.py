"""Single-process capture: plan, model, detectors and writer in one process.

Resumable by construction: it only computes units without a commit record, so rerunning
the same command after a crash finishes the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.capture.config import CaptureConfig
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.worker import UnitWorker, process_units
from pipeline.progress import RowProgress
from pipeline.store.writer import StoreWriter


@dataclass(frozen=True)
class CaptureResult:
    path: Path
    num_rows: int
    num_units: int
    units_computed: int
    hooks: dict[str, int]
    compute_s: float = 0.0  # wall time of the unit loop (model loading and planning excluded)
    repairs: tuple[str, ...] = ()  # committed parts/units that failed their check, redone


def capture(
    config: CaptureConfig, progress: bool = True, command: str | None = None
) -> CaptureResult:
    """Capture `config.hooks` over `config.corpus` into the store at `config.out`.

    `command`: the shell command that reruns this capture, recorded in the store so that
    readers of an unfinished store can say how to finish it.
    """
    threads = torch.get_num_threads()
    try:
        return _capture(config, progress, command)
    finally:
        torch.set_num_threads(threads)  # config.torch_threads applies to this call only


def _capture(config: CaptureConfig, progress: bool, command: str | None) -> CaptureResult:
    prepared = prepare_capture(config, command=command)
    writer = prepared.writer
    pending = writer.pending_units()
    meter = progress_meter(writer, pending) if progress else None
    worker = UnitWorker(prepared.config, prepared.out, lm=prepared.lm)
    began = time.perf_counter()
    try:
        for record in process_units(worker, pending):
            if meter is not None:
                meter.advance(record["num_rows"])
        if meter is not None:
            meter.close()
        return finish(writer, pending, time.perf_counter() - began)
    finally:  # a failed run (a full disk) must not keep its store's files open
        worker.writer.close()
        writer.close()


def progress_meter(writer: StoreWriter, pending: list[int]) -> RowProgress:
    """A progress meter that counts the rows of already committed units as done."""
    index = writer.index
    done_rows = index.num_rows - sum(index.unit_rows(u)[1] - index.unit_rows(u)[0] for u in pending)
    return RowProgress(index.num_rows, done_rows)


def finish(writer: StoreWriter, pending: list[int], compute_s: float) -> CaptureResult:
    """Finalize the store (all units committed) and describe the run."""
    writer.finalize()
    return CaptureResult(
        path=writer.root,
        num_rows=writer.num_rows,
        num_units=writer.num_units,
        units_computed=len(pending),
        hooks=writer.hooks,
        compute_s=compute_s,
        repairs=tuple(writer.repairs),
    )
