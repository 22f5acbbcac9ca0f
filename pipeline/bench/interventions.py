"""Intervention throughput against bare forward passes over the same batches.

An intervention run costs 1 + S forward passes per batch (the baseline and one per stage
of the cascade) plus the effects: next-token log-softmax, KL, loss and top-1 over the
whole vocabulary for causal LMs, relative changes at the measured layers, writing the
Parquet table and the commit record. The baseline here is exactly those 1 + S bare
forward passes (no hooks, no effects) over the same batches, so the ratio is what the
intervention machinery keeps of the model's own speed.

Models: the embedded MiniLM (encoder: output cosine instead of logits) and a GPT-2-small
shape with random weights (causal: the vocabulary-wide effects are the extra cost).
Target (ours, no issue names one): >= 0.85 of the bare passes on CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from pipeline.bench.models import gpt2_small_folder
from pipeline.bench.timing import interleaved, markdown_table
from pipeline.capture import CaptureConfig, capture
from pipeline.interventions import spec_from_dict
from pipeline.interventions.prepare import prepare_run
from pipeline.interventions.worker import InterventionWorker, batches, unit_windows

STEPS = [
    {"name": "damp", "layer": "layer_1", "scale": 0.5},
    {"name": "ablate", "layer": "layer_3", "ablate": "mean", "positions": [0, 1, 2]},
]


def measure(model: str | None, label: str, rounds: int, threads: int, workdir: Path):
    """Capture a 2-unit store of `model`, then time the cascade and the bare passes."""
    store = workdir / ("store-" + ("minilm" if model is None else Path(model).name))
    capture(
        CaptureConfig(
            model=model,
            hooks=("layer_1", "layer_3"),
            dtype="float16",
            max_tokens=2 * 2048,
            rows_per_unit=2048,
            torch_threads=threads,
            out=str(store),
        ),
        progress=False,
    )
    spec = spec_from_dict(
        {
            "store": str(store),
            "out": str(store.with_name(store.name + "-effects")),
            "steps": STEPS,
            "measure": ["layer_1", "layer_3"],
            "torch_threads": threads,
        }
    )
    run = prepare_run(spec)
    worker = InterventionWorker(run)
    lm = worker.lm
    all_batches = [
        (b.ids_BT, b.mask_BT)
        for unit in run.units
        for b in batches(unit_windows(worker.store, unit), spec.batch_size, lm.pad_token_id)
    ]
    passes = 1 + len(spec.stage_sizes)
    tokens = sum(int(mask.sum()) for _, mask in all_batches)

    def bare():
        for ids, mask in all_batches:
            for _ in range(passes):
                lm.model(input_ids=ids, attention_mask=mask)

    def intervene():
        for unit in run.units:
            worker.process(unit)

    with torch.no_grad():
        timings = interleaved({"bare": bare, "interventions": intervene}, rounds=rounds)
    rates = {name: tokens * passes / t.median for name, t in timings.items()}
    return [
        [label, f"bare forward x {passes}", rates["bare"], 1.0],
        [
            label,
            f"interventions ({passes - 1} stages)",
            rates["interventions"],
            rates["interventions"] / rates["bare"],
        ],
    ]


def run(rounds: int = 3, threads: int | None = None, device: str = "cpu") -> str:
    threads = threads or 2
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = measure(None, "MiniLM (encoder)", rounds, threads, workdir)
        gpt2 = str(gpt2_small_folder(workdir / "gpt2"))
        rows += measure(gpt2, "GPT-2-small shape (causal, 30k vocab)", rounds, threads, workdir)
    header = ["model", "case", "forward tokens/s", "vs bare"]
    return (
        f"2 units of 2048 tokens, batch 8 x 128, {threads} threads; tokens/s counts every "
        "forward pass\n\n" + markdown_table(header, rows)
    )
