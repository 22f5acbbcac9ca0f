"""GPU figures (issue 4): tokens/s of one model replica against the bare forward pass.

GPT-2-small shape (12 blocks, d=768, random weights) in bfloat16 on one GPU, batch
32 x 1024 tokens, stores in bfloat16. One replica is what one Ray actor hosts, so this
is the per-GPU rate; Ray adds only scheduling around whole units.
Also: the hook overhead of a detector on every block, in bfloat16 on the GPU.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.bench import hooks as hooks_bench
from pipeline.bench.capture import time_capture_cases
from pipeline.bench.models import gpt2_small_folder
from pipeline.bench.timing import markdown_table
from pipeline.capture.config import CaptureConfig
from pipeline.store.corpus import CorpusConfig


def repeated_pydoc_jsonl(path: Path, copies: int) -> Path:
    from pydoc_data.topics import topics

    with open(path, "w") as handle:
        for copy in range(copies):
            for key in sorted(topics):
                handle.write(json.dumps({"text": f"[{copy}] {topics[key]}"}) + "\n")
    return path


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
            write_s = plain_write_seconds(
                work / "plain", tokens, 768 * len(hooks) * 2, rows_per_unit, rounds
            )
            rows.append(
                [label, "plain write()+fsync of the same bytes", tokens / write_s, base / write_s]
            )
    return rows


def plain_write_seconds(
    folder: Path, tokens: int, bytes_per_token: int, rows_per_unit: int, rounds: int
) -> float:
    """Median seconds to write `tokens` rows of activations as one file per unit, fsynced.

    The storage bound of capture on this machine: no model, no checksums, no tables.
    """
    folder.mkdir(exist_ok=True)
    unit_bytes = np.random.default_rng(0).integers(
        0, 255, rows_per_unit * bytes_per_token, dtype=np.uint8
    )
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        for unit in range(tokens // rows_per_unit):
            with open(folder / f"unit-{unit}", "wb") as handle:
                handle.write(unit_bytes.data)
                handle.flush()
                os.fsync(handle.fileno())
        samples.append(time.perf_counter() - began)
        for path in folder.iterdir():
            path.unlink()
    return sorted(samples)[len(samples) // 2]


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
