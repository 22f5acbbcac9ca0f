"""Everything before the first unit: model, hook widths, plan, and the store itself.

Shared by single-process capture and the Ray driver, so both create byte-identical
stores from the same config. The order is chosen to fail fast: output path, then hook
names, then the dry run, then the store's fingerprint (a rerun with another config is
refused here), and only then the (possibly long) planning, which the caller may run on
Ray (`planner`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import load_model, model_path, probe_widths, weights_fingerprint
from pipeline.model import LanguageModel
from pipeline.store.corpus import Corpus
from pipeline.store.layout import KNOWN_ENTRIES
from pipeline.store.location import is_url, require_bucket, resolve, store_path
from pipeline.store.output_dir import foreign_entries
from pipeline.store.plan import PlanConfig
from pipeline.store.planner import PlanResult, plan_corpus
from pipeline.store.writer import StoreWriter

# (store root, corpus, tokenizer, plan config) -> the plan, written into the store.
Planner = Callable[[Path, Corpus, object, PlanConfig], PlanResult]


@dataclass
class PreparedCapture:
    config: CaptureConfig  # with integer hooks replaced by the dotted paths they index
    out: Path
    lm: LanguageModel
    writer: StoreWriter
    widths: dict[str, int]


def check_output_path(out: Path) -> None:
    """Fail before the model loads: a file, a foreign folder, or a place we cannot write."""
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"the output path {out} is a file; choose a directory path for the store (--out)"
        )
    if out.is_dir():
        foreign = foreign_entries(out, KNOWN_ENTRIES)
        if foreign:
            raise ValueError(
                f"store path {out} is a non-empty directory that is not an activation store "
                f"(it holds {foreign[:5]}); refusing to write or delete there. Choose a new "
                "or empty folder (--out)"
            )
    if is_url(out):
        require_bucket(out, "the store")
        return
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write the store {out}: {existing} is not a writable folder; choose "
            "another --out"
        )


def store_meta(config: CaptureConfig, lm: LanguageModel, corpus: Corpus) -> dict:
    """What decides the bytes of a store, besides the plan (see docs/store-format.md)."""
    path = model_path(config)
    return {
        "model": "embedded:all-MiniLM-L6-v2" if config.model is None else str(config.model),
        "model_weights_sha256": weights_fingerprint(path),
        "model_dtype": config.model_dtype or "float32",
        "tokenizer": type(lm.tokenizer).__name__,
        "tokenizer_vocab_size": len(lm.tokenizer),
        "hooks_resolved": {hook: lm.layers.resolve(hook) for hook in config.hooks},
        "context_length": config.context_length,
        "mode": config.mode,
        "corpus": corpus.config.kind,
        "corpus_fingerprint": corpus.fingerprint(),
        "rows_per_unit": config.rows_per_unit,
        "max_tokens": config.max_tokens,
        "batch_size": config.batch_size,
    }


def plan_config(config: CaptureConfig) -> PlanConfig:
    return PlanConfig(
        context_length=config.context_length,
        mode=config.mode,
        rows_per_unit=config.rows_per_unit,
        max_tokens=config.max_tokens,
    )


def prepare_capture(
    config: CaptureConfig,
    planner: Planner | None = None,
    lm: LanguageModel | None = None,
    command: str | None = None,
) -> PreparedCapture:
    """Load and check the model, create or reopen the store, plan the corpus into it.

    `planner` plans elsewhere (the Ray driver tokenizes in tasks); default: this process.
    `lm`: the config's model, already loaded (notebooks, benchmarks); loaded if None.
    `command`: the shell command that reruns this capture (recorded in the store).
    A reopened store is checked first (`StoreWriter.recheck`); what was damaged is
    printed to stderr and redone.
    """
    out = store_path(resolve(config.out))
    check_output_path(out)
    corpus = Corpus(config.corpus)
    corpus.fingerprint()  # a missing or empty corpus fails here, before the model loads
    lm = lm if lm is not None else load_model(config)
    config = with_hook_names(config, lm)
    widths = probe_widths(lm, config.hooks)
    limit = lm.max_positions
    if limit is not None and config.context_length > limit:
        raise ValueError(
            f"context_length={config.context_length} exceeds the model's {limit} positions"
        )
    plan = plan_config(config)
    run_planner = planner or plan_corpus
    writer = StoreWriter.create_or_open(
        out,
        store_meta(config, lm, corpus),
        widths,
        config.dtype,
        plan,
        lambda root: run_planner(root, corpus, lm.tokenizer, plan),
        overwrite=config.overwrite,
        verify=config.verify,
        command=command,
    )
    for line in writer.repairs:
        print(f"warning: {line}", file=sys.stderr)
    return PreparedCapture(config=config, out=out, lm=lm, writer=writer, widths=widths)


def with_hook_names(config: CaptureConfig, lm: LanguageModel) -> CaptureConfig:
    """Integer hooks (indices into `lm.layers.names()`) become the dotted paths they name:
    a store's arrays are named by layer, and an index means nothing without the model."""
    if not any(isinstance(hook, int) for hook in config.hooks):
        return config
    names = tuple(
        lm.layers.resolve(hook) if isinstance(hook, int) else hook for hook in config.hooks
    )
    if len(set(names)) != len(names):
        raise ValueError(f"hooks {list(config.hooks)} name the same layer twice: {list(names)}")
    return replace(config, hooks=names)
