"""Single-process capture vs the physical limit: a bare forward pass truncated after the
deepest captured layer, on the same batches with the same threads.

Capture time covers what a worker does per unit: forward, copy into the unit buffer, and
the commit (Zarr shard, Parquet tokens, record). Each round starts from an empty store so
every write is a first write, as in a real run. Target (issue 3): at least 0.95.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from benchmarks.models import gpt2_small_folder
from benchmarks.timing import interleaved, markdown_table
from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import deepest_hook
from pipeline.capture.prepare import prepare_capture
from pipeline.capture.worker import UnitWorker, plan_batches, process_units, read_unit_windows


def hook_sets(num_blocks: int) -> dict[str, tuple[str, ...]]:
    spread = sorted({round(i * (num_blocks - 1) / 3) for i in range(4)} | {num_blocks - 1})
    spread = spread[-4:] if len(spread) >= 4 else spread
    return {
        "1 hook (middle)": (f"layer_{num_blocks // 2}",),
        "4 hooks (spread)": tuple(f"layer_{i}" for i in spread),
    }


def clear_units(root: Path) -> None:
    """Remove every unit's files (untimed), so the next round writes fresh files."""
    for path in (root / "units").iterdir():
        path.unlink()
    for shard_dir in (root / "activations.zarr").glob("*/c"):
        shutil.rmtree(shard_dir)


def measure(
    model: str | None, label: str, units: int, rounds: int, threads: int, workdir: Path
) -> list[list]:
    torch.set_num_threads(threads)
    rows = []
    for hooks_label, hooks in hook_sets(_num_blocks(model)).items():
        config = CaptureConfig(
            model=model,
            hooks=hooks,
            dtype="float16",
            context_length=128,
            rows_per_unit=4096,
            max_tokens=4096 * units,
            batch_size=8,
            out=str(workdir / f"{label}-{len(hooks)}"),
            overwrite=True,
            torch_threads=threads,
        )
        timings, tokens = time_capture_cases(config, rounds)
        base = timings["bare truncated"].median
        for name, timing in timings.items():
            rows.append([label, hooks_label, name, tokens / timing.median, base / timing.median])
    return rows


def unit_batches(worker: UnitWorker) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, mask) of every batch the worker runs for the plan's units, on its device."""
    index, device, batches = worker.index, worker.lm.device, []
    for unit in range(index.num_units):
        start, stop = index.unit_rows(unit)
        windows = read_unit_windows(index, unit, worker.config.context_length)
        for batch in plan_batches(windows, worker.config.batch_size):
            ids, mask, _ = worker._batch(windows, batch, start, stop)
            batches.append((ids.to(device), mask.to(device)))
    return batches


def time_capture_cases(config: CaptureConfig, rounds: int):
    """Interleaved timings of capture, bare truncated and bare full forward passes."""
    prepared = prepare_capture(config)
    worker = UnitWorker(config, prepared.out, lm=prepared.lm)
    lm, index = prepared.lm, prepared.writer.index
    stop = deepest_hook(lm, config.hooks)
    batches = unit_batches(worker)

    def sync():
        if lm.device.type == "cuda":
            torch.cuda.synchronize(lm.device)

    def capture_round():
        for _ in process_units(worker, list(range(index.num_units))):
            pass

    def bare_truncated():
        for ids, mask in batches:
            lm.inference.forward_ids(ids, mask, stop_after=stop)
        sync()

    def bare_full():
        for ids, mask in batches:
            lm.inference.forward_ids(ids, mask)
        sync()

    cases = {
        "bare full forward": bare_full,
        "bare truncated": bare_truncated,
        "capture": capture_round,
    }
    setups = {"capture": lambda: clear_units(prepared.out)}  # every round writes fresh files
    return interleaved(cases, rounds=rounds, setups=setups), index.num_rows


def _num_blocks(model: str | None) -> int:
    from transformers import AutoConfig

    from pipeline.model import default_model_path

    return AutoConfig.from_pretrained(model or default_model_path()).num_hidden_layers


def run(rounds: int = 3, threads: int | None = None, device: str = "cpu", units: int = 2) -> str:
    threads = threads or 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = measure(None, "MiniLM (6 blocks, d=384)", units, rounds, threads, workdir)
        rows += measure(
            str(gpt2_small_folder(workdir / "gpt2")),
            "GPT-2-small shape (12 blocks, d=768)",
            units,
            rounds,
            threads,
            workdir,
        )
    header = ["model", "hooks", "case", "tokens/s", "throughput / bare truncated"]
    return (
        f"batch 8 x 128 tokens, {threads} threads, {units} units of 4096 rows (the default)\n\n"
        + markdown_table(header, rows)
    )


def run_pipelining_ab(rounds: int = 7, threads: int | None = None, device: str = "cpu") -> str:
    """Where capture's time goes: no write, sequential commits, pipelined commits.

    MiniLM, 4 hooks, 4 units of 1,024 rows, float16; each variant's ratio to the bare
    truncated forward on the same batches.
    """
    torch.set_num_threads(threads or 2)
    hooks = ("layer_0", "layer_2", "layer_3", "layer_5")
    with tempfile.TemporaryDirectory() as tmp:
        config = CaptureConfig(
            hooks=hooks,
            dtype="float16",
            context_length=128,
            rows_per_unit=1024,
            max_tokens=4096,
            batch_size=8,
            out=str(Path(tmp) / "store"),
            torch_threads=threads or 2,
        )
        prepared = prepare_capture(config)
        worker = UnitWorker(config, prepared.out, lm=prepared.lm)
        units = list(range(prepared.writer.num_units))
        batches, stop = unit_batches(worker), deepest_hook(prepared.lm, hooks)

        def bare():
            for ids, mask in batches:
                prepared.lm.inference.forward_ids(ids, mask, stop_after=stop)

        cases = {
            "bare truncated": bare,
            "capture hooks + buffer copies, no write": lambda: [
                worker._compute(u, worker._take_buffers()) for u in units
            ],
            "sequential: compute, then commit": lambda: list(process_units(worker, units, depth=1)),
            "pipelined: commit during the next forward": lambda: list(
                process_units(worker, units, depth=2)
            ),
        }
        clear = {name: (lambda: clear_units(prepared.out)) for name in list(cases)[2:]}
        timings = interleaved(cases, rounds=rounds, setups=clear)
    base = timings["bare truncated"].median
    rows = [[name, base / t.median] for name, t in timings.items()]
    return markdown_table(["variant", "throughput / bare truncated"], rows)
