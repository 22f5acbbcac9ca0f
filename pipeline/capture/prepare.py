"""Everything before the first unit: model, hook widths, plan, and the store itself.

Shared by single-process capture and the Ray driver, so both create byte-identical
stores from the same config. The order is chosen to fail fast: output path, then hook
names, then the dry run, then the store's fingerprint (a rerun with another config is
refused here), and only then the (possibly long) planning, which the caller may run on
Ray (`planner`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import load_model, model_path, probe_widths, weights_fingerprint
from pipeline.model import LanguageModel
from pipeline.store.corpus import Corpus
from pipeline.store.plan import PlanConfig
from pipeline.store.planner import PlanResult, plan_corpus
from pipeline.store.writer import StoreWriter

# (store root, corpus, tokenizer, plan config) -> the plan, written into the store.
Planner = Callable[[Path, Corpus, object, PlanConfig], PlanResult]


@dataclass
class PreparedCapture:
    out: Path
    lm: LanguageModel
    writer: StoreWriter
    widths: dict[str, int]


def check_output_path(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"the output path {out} is a file; choose a directory path for the store (--out)"
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
    config: CaptureConfig, planner: Planner | None = None, lm: LanguageModel | None = None
) -> PreparedCapture:
    """Load and check the model, create or reopen the store, plan the corpus into it.

    `planner` plans elsewhere (the Ray driver tokenizes in tasks); default: this process.
    `lm`: the config's model, already loaded (notebooks, benchmarks); loaded if None.
    """
    out = Path(config.out).resolve()
    check_output_path(out)
    lm = lm if lm is not None else load_model(config)
    widths = probe_widths(lm, config.hooks)
    limit = lm.max_positions
    if limit is not None and config.context_length > limit:
        raise ValueError(
            f"context_length={config.context_length} exceeds the model's {limit} positions"
        )
    corpus = Corpus(config.corpus)
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
    )
    return PreparedCapture(out=out, lm=lm, writer=writer, widths=widths)
