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
    ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=1024, **ids))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_gpt2_folder(path: Path, seed: int = 0) -> Path:
    """A 2-block GPT-2 (d=64) with MiniLM's tokenizer: scale runs where the model is not
    the point."""
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
