"""Benchmark models: a GPT-2-small-shaped model with random weights, saved like a user's."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from pipeline.model.defaults import default_model_path


def gpt2_small_folder(path: Path, seed: int = 0, tokenizer_dir: Path | None = None) -> Path:
    """GPT-2 small shape (12 blocks, d=768) with MiniLM's tokenizer, via save_pretrained."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or default_model_path())
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=1024))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
