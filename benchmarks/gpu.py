"""GPU figures (issue 4): tokens/s of one model replica against the bare forward pass.

GPT-2-small shape (12 blocks, d=768, random weights) in bfloat16 on one GPU, batch
32 x 1024 tokens, stores in bfloat16. One replica is what one Ray actor hosts, so this
is the per-GPU rate; Ray adds only scheduling around whole units.
Also: the hook overhead of a detector on every block, in bfloat16 on the GPU, and the
storage bound: the same shard files written with fsync by as many threads as capture
writes them with (`capture_writers`), so capture is compared with the disk it could use.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks import hooks as hooks_bench
from benchmarks.capture import time_capture_cases
from benchmarks.corpora import repeated_pydoc_jsonl
from benchmarks.models import gpt2_small_folder
from benchmarks.timing import markdown_table
from pipeline.capture.config import CaptureConfig
from pipeline.capture.worker import pipeline_depth
from pipeline.store.corpus import CorpusConfig


def capture_rows(
    device: str, units: int, context_length: int, batch_size: int, rounds: int
) -> list[list]:
    """Capture vs bare forward for one replica; rows for the table (bf16 model and store)."""
    tokenizer_dir = os.environ.get("BENCH_TOKENIZER_DIR")
    rows_per_unit = context_length * batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = gpt2_small_folder(
            work / "gpt2", tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir else None
        )
        corpus = repeated_pydoc_jsonl(
            work / "corpus.jsonl", copies=max(1, rows_per_unit * units // 100_000 + 1)
        )
        hook_sets = {
            "1 hook (layer_6)": ("layer_6",),
            "4 hooks": ("layer_2", "layer_5", "layer_8", "layer_11"),
        }
        for label, hooks in hook_sets.items():
            config = CaptureConfig(
                model=str(folder),
                hooks=hooks,
                dtype="bfloat16",
                model_dtype="bfloat16",
                device=device,
                corpus=CorpusConfig(kind="jsonl", path=str(corpus)),
                context_length=context_length,
                rows_per_unit=rows_per_unit,
                max_tokens=rows_per_unit * units,
                batch_size=batch_size,
                out=str(work / f"store-{len(hooks)}"),
            )
            timings, tokens = time_capture_cases(config, rounds)
            base = timings["bare truncated"].median
            for name, timing in timings.items():
                rows.append([label, name, tokens / timing.median, base / timing.median])
            writers = capture_writers(len(hooks), device)
            write_s = parallel_write_seconds(
                work / "plain",
                num_units=tokens // rows_per_unit,
                num_hooks=len(hooks),
                shard_bytes=rows_per_unit * 768 * 2,
                writers=writers,
                rounds=rounds,
            )
            case = f"write()+fsync of the same shards, {writers} threads (as capture)"
            rows.append([label, case, tokens / write_s, base / write_s])
    return rows


def capture_writers(num_hooks: int, device: str) -> int:
    """How many shard files capture writes at once: one per hook per unit, with
    `pipeline_depth` units in flight, on the store writer's pool of min(8, 2 x hooks)
    threads (`StoreWriter` in pipeline/store/writer.py)."""
    in_flight = pipeline_depth(torch.device(device)) * num_hooks
    return min(8, 2 * num_hooks, in_flight)


def parallel_write_seconds(
    folder: Path, num_units: int, num_hooks: int, shard_bytes: int, writers: int, rounds: int
) -> float:
    """Median seconds to write one fsynced file of `shard_bytes` per hook per unit from
    `writers` threads.

    The storage bound of capture on this machine: the same files of the same size, written
    by as many threads as capture writes them with (a single sequential writer would
    understate the disk and make capture look storage-bound when it is not); no model, no
    checksums, no tables.
    """
    folder.mkdir(exist_ok=True)
    shard = np.random.default_rng(0).integers(0, 255, shard_bytes, dtype=np.uint8)
    paths = [folder / f"unit-{u}-hook-{h}" for u in range(num_units) for h in range(num_hooks)]

    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.write(shard.data)
            handle.flush()
            os.fsync(handle.fileno())

    samples = []
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="bench-write") as pool:
        for _ in range(rounds):
            began = time.perf_counter()
            list(pool.map(write, paths))
            samples.append(time.perf_counter() - began)
            for path in paths:
                path.unlink()
    return statistics.median(samples)


def run(rounds: int = 3, threads: int | None = None, device: str = "cuda", units: int = 8) -> str:
    if not device.startswith("cuda"):
        raise ValueError("the gpu suite needs --device cuda")
    lines = [f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", ""]
    lines.append("hook overhead, bf16, batch 32 x 1024:")
    lines.append(
        hooks_bench.run(batch=32, seq_len=1024, rounds=rounds, device=device, dtype=torch.bfloat16)
    )
    rows = capture_rows(device, units=units, context_length=1024, batch_size=32, rounds=rounds)
    lines += [
        "",
        "capture per GPU (one replica), bf16 model and store, batch 32 x 1024, units of 32768 rows:",
    ]
    lines.append(markdown_table(["hooks", "case", "tokens/s", "throughput / bare truncated"], rows))
    return "\n".join(lines)
