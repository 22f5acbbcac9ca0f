"""Overhead of capture hooks: a detector on every block vs the bare forward pass.

GPT-2-small shape (12 blocks, d=768, random weights), batch 8 x 128 tokens, CPU.
Target (issue 2): the hooked pass costs at most 5% more than the bare one.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks.timing import interleaved, markdown_table
from pipeline.hooks import LayerActivationDetector
from pipeline.model import LanguageModel


def gpt2_small_shaped(seed: int = 0, n_layer: int = 12) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=n_layer)).eval()


def run(
    batch: int = 8,
    seq_len: int = 128,
    rounds: int = 7,
    threads: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> str:
    if threads:
        torch.set_num_threads(threads)
    lm = LanguageModel(gpt2_small_shaped().to(device=device, dtype=dtype), tokenizer=None)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.model.config.vocab_size, (batch, seq_len), generator=generator).to(
        device
    )
    mask = torch.ones_like(ids)
    detectors = [LayerActivationDetector(f"layer_{i}") for i in range(lm.layers.num_blocks)]

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    def bare():
        lm.inference.forward_ids(ids, mask)
        sync()

    def hooked():
        with lm.layers.hooks(*detectors):
            lm.inference.forward_ids(ids, mask)
        sync()

    timings = interleaved({"bare forward": bare, "detector on every block": hooked}, rounds=rounds)
    base = timings["bare forward"].median
    tokens = batch * seq_len
    rows = [[name, t.median, tokens / t.median, t.median / base] for name, t in timings.items()]
    return markdown_table(["case", "median s", "tokens/s", "time / bare"], rows)
