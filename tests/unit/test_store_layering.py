"""What the store ships to Ray tasks pickles and works the same (the store's imports are
checked with every layer's in test_layering.py)."""

from __future__ import annotations

import dataclasses
import pickle

from pipeline.store.corpus import Corpus
from pipeline.store.parts import PartOffsets, PartWriter, publish_part, tokenize_shard
from pipeline.store.plan import PlanConfig, window_spec
from tests.store_helpers import minilm_tokenizer, pydoc_corpus_config


def test_what_planning_ships_to_tasks_pickles_and_publishes_the_same_part(tmp_path):
    # pipeline.distributed.planning sends the corpus config, a shard, the window spec,
    # the tokenized shard, the part writer and the offsets to Ray tasks.
    config = PlanConfig(context_length=48, rows_per_unit=500)
    corpus = Corpus(pydoc_corpus_config(4))
    tokenizer = minilm_tokenizer()
    spec = window_spec(tokenizer, config)
    shard = corpus.shards()[0]
    tokens = tokenize_shard(corpus, shard, tokenizer, spec)
    at = PartOffsets(
        part=0, doc_start=0, content_start=0, window_start=0, row_start=0,
        rows_left=None, docs_left=4,
    )  # fmt: skip
    writer = PartWriter(root=tmp_path / "a", spec=spec, rows_per_unit=500, name_width=5)
    here = publish_part(writer, tokens, at)

    shipped = (corpus.config, shard, spec, tokens, dataclasses.replace(writer, root=tmp_path / "b"))
    corpus_config, shard_b, spec_b, tokens_b, writer_b = pickle.loads(pickle.dumps(shipped))
    assert Corpus(corpus_config).shards()[0] == shard_b and spec_b == spec
    there = publish_part(writer_b, tokens_b, pickle.loads(pickle.dumps(at)))

    assert here["row_stop"] > 0 and here["digest"] == there["digest"]
    assert here["tokens"]["sha256"] == there["tokens"]["sha256"]
    assert here["docs"]["sha256"] == there["docs"]["sha256"]
