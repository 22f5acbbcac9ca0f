"""Corpus scale at CI size: planning memory does not grow with the corpus, workers read
only their unit's rows, and max_tokens reads only the corpus it needs."""

from __future__ import annotations

import tracemalloc

import pytest

from pipeline.capture import capture
from pipeline.store.corpus import Corpus, CorpusConfig
from pipeline.store.plan import PlanConfig
from pipeline.store.plan_index import PlanIndex
from pipeline.store.planner import plan_corpus
from pipeline.store.reader import ActivationStore
from tests.helpers import capture_config, write_pydoc_jsonl
from tests.store_helpers import minilm_tokenizer


def planning_peak_bytes(tmp_path, copies: int) -> tuple[int, int]:
    """(peak traced bytes while planning, rows) for `copies` copies of the pydoc corpus."""
    path = write_pydoc_jsonl(tmp_path / f"corpus-{copies}.jsonl", repeat=copies)
    corpus = Corpus(CorpusConfig(kind="jsonl", path=str(path), shard_bytes=256 * 1024))
    tokenizer = minilm_tokenizer()
    config = PlanConfig(context_length=128)
    tracemalloc.start()
    try:
        result = plan_corpus(tmp_path / f"store-{copies}", corpus, tokenizer, config, fsync=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, result.num_rows


@pytest.mark.slow
def test_planning_memory_does_not_grow_with_the_corpus(tmp_path):
    small_peak, small_rows = planning_peak_bytes(tmp_path, copies=2)
    large_peak, large_rows = planning_peak_bytes(tmp_path, copies=8)
    assert large_rows > 3.9 * small_rows > 900_000
    # Holding per-token state for the whole corpus would cost >= 13 bytes a row more.
    assert large_peak - small_peak < 2 * (large_rows - small_rows)
    assert large_peak < 1.3 * small_peak


def test_a_worker_reads_only_its_units_rows(tiny_gpt2_path, tmp_path, monkeypatch):
    spans = []
    read_rows = PlanIndex.read_rows

    def recording(self, start, stop, columns=None):
        spans.append((start, stop))
        return read_rows(self, start, stop, columns)

    monkeypatch.setattr(PlanIndex, "read_rows", recording)
    config = capture_config(tiny_gpt2_path, tmp_path / "s", max_tokens=5000)
    result = capture(config, progress=False)
    widest = config.rows_per_unit + 2 * config.context_length
    assert len(spans) == result.num_units
    assert all(stop - start <= widest for start, stop in spans)


def test_max_tokens_reads_only_the_documents_it_needs(tiny_gpt2_path, tmp_path, monkeypatch):
    path = write_pydoc_jsonl(tmp_path / "corpus.jsonl", repeat=4)
    read = []
    read_shard = Corpus.read_shard

    def counting(self, shard):
        for document in read_shard(self, shard):
            read.append(document)
            yield document

    monkeypatch.setattr(Corpus, "read_shard", counting)
    config = capture_config(
        tiny_gpt2_path,
        tmp_path / "s",
        max_tokens=2000,
        corpus=CorpusConfig(kind="jsonl", path=str(path)),  # one 1.9 MB shard
    )
    capture(config, progress=False)
    store = ActivationStore.open(config.out)
    assert store.num_rows == 2000
    assert len(read) <= 24  # of 316 documents in the shard: batches of 8, 16 while needed
    assert store.meta["plan"]["num_documents"] == len(store.docs()) < len(read) + 1
    assert store.meta["plan"]["truncated_by_max_tokens"]
