"""Shared builders for tests: tiny causal LMs saved to disk and loaded like a user's model."""

from __future__ import annotations

from pathlib import Path

import torch


def pydoc_texts(limit: int | None = None) -> list[str]:
    """Real English documents that ship with Python (the Python reference manual topics)."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    return texts[:limit] if limit else texts


def train_bpe_tokenizer(path: Path, vocab_size: int = 2000):
    """A byte-level BPE tokenizer (GPT-2 style, no pad token) trained on the pydoc corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(pydoc_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(path)
    return fast


def build_tiny_gpt2(
    path: Path,
    n_layer: int = 4,
    n_embd: int = 64,
    n_head: int = 4,
    n_inner: int | None = None,
    n_positions: int = 256,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
) -> Path:
    """Build a GPT-2 from a config with a fixed seed and `save_pretrained` it to `path`."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer = train_bpe_tokenizer(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.save_pretrained(path)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=n_inner,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(path)
    return path


def store_arrays_equal(a, b) -> bool:
    """Two stores hold byte-identical activation arrays and equal token tables."""
    import numpy as np

    from pipeline.store.reader import ActivationStore

    left, right = ActivationStore.open(a), ActivationStore.open(b)
    if left.hooks != right.hooks or left.num_rows != right.num_rows:
        return False
    for hook in left.hooks:
        if not np.array_equal(left.activations(hook)[:], right.activations(hook)[:]):
            return False
    return left.tokens().equals(right.tokens())


def leftover_temp_files(root) -> list:
    """Hidden temp files anywhere in a store (none may remain after a finished run)."""
    from pathlib import Path

    return [p for p in Path(root).rglob(".*") if p.is_file()]


def capture_config(model, out, **overrides):
    """A small capture of the tiny GPT-2: 2 blocks, 64-token windows, 512-row units."""
    from pipeline.capture import CaptureConfig

    values = dict(
        model=str(model),
        hooks=("layer_1", "layer_2"),
        dtype="float32",
        context_length=64,
        rows_per_unit=512,
        max_tokens=3000,
        batch_size=4,
        out=str(out),
        torch_threads=1,
    )
    values.update(overrides)
    return CaptureConfig(**values)


def write_pydoc_jsonl(path: Path, repeat: int = 1) -> Path:
    """The pydoc topics as a JSONL corpus (`repeat` times over), one record a line."""
    import json

    lines = [json.dumps({"text": text}) + "\n" for text in pydoc_texts()]
    with open(path, "w") as f:
        for _ in range(repeat):
            f.writelines(lines)
    return path
