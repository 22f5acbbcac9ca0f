"""Plan a corpus with Ray tasks: tokenize shards in parallel, commit parts in order.

The driver holds only the planner's cursor (offsets and per-part summaries) and object
references: tokenized shards go from the task that made them to the task that publishes
them through Ray's object store, never through the driver. At most `max_in_flight`
shards are tokenized ahead of the part being committed, so memory is bounded by a few
shards wherever it is. The parts are the same bytes as single-process planning writes:
tokenizing a shard depends on the shard alone, and publishing runs in shard order with
the same `PlanCursor`.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from pathlib import Path

import ray

from pipeline import faults
from pipeline.store.corpus import Corpus, CorpusConfig, CorpusShard
from pipeline.store.parts import PartOffsets, ShardTokens, publish_part, tokenize_shard
from pipeline.store.plan import PlanConfig
from pipeline.store.planner import PlanCursor, PlanResult, close_plan, start_plan
from pipeline.store.windows import WindowSpec


@functools.lru_cache(maxsize=2)
def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    from pipeline.model.remote import local_model_folder  # a URL: this node's cached copy

    return AutoTokenizer.from_pretrained(local_model_folder(model_dir))


def _tokenize(
    corpus_config: CorpusConfig,
    shard: CorpusShard,
    model_dir: str,
    spec: WindowSpec,
    at: PartOffsets,
) -> ShardTokens:
    # One task is one CPU: the tokenizer's own thread pool would oversubscribe the node.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # `at` is where the next unpublished part starts: what it leaves to plan bounds this
    # shard's needs too, however far ahead it is.
    return tokenize_shard(
        _corpus(corpus_config), shard, _tokenizer(model_dir), spec, at.rows_left, at.docs_left
    )


@functools.lru_cache(maxsize=2)
def _corpus(config: CorpusConfig) -> Corpus:
    return Corpus(config)  # reused across a worker's tasks: it caches file listings


def ray_planner(model_dir: str | Path, max_in_flight: int | None = None):
    """A `Planner` for `prepare_capture` that tokenizes in Ray tasks."""

    def plan(root: Path, corpus: Corpus, tokenizer, config: PlanConfig) -> PlanResult:
        cursor, writer, todo = start_plan(root, corpus, tokenizer, config)
        width = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 2)))
        tokenize = ray.remote(_tokenize).options(num_cpus=1, **faults.ray_options())
        # Publishing is light (layout and Parquet writes), and the next part waits for it.
        publish = ray.remote(publish_part).options(num_cpus=0.25, **faults.ray_options())
        shards, in_flight = deque(todo), deque()
        try:
            while not cursor.finished and (shards or in_flight):
                while shards and len(in_flight) < _lookahead(cursor, width):
                    shard, at = shards.popleft(), cursor.offsets()
                    in_flight.append(
                        tokenize.remote(corpus.config, shard, str(model_dir), writer.spec, at)
                    )
                cursor.advance(
                    ray.get(publish.remote(writer, in_flight.popleft(), cursor.offsets()))
                )
        finally:
            for ref in in_flight:  # shards past max_tokens, or after a failure
                ray.cancel(ref)
        return close_plan(cursor, writer, tokenizer)

    return plan


def _lookahead(cursor: PlanCursor, width: int) -> int:
    """Shards to tokenize ahead: all `width` slots, or under max_tokens about as many as
    the remaining rows need (one until the first part shows how many rows a shard gives)."""
    limit = cursor.config.max_tokens
    if limit is None:
        return width
    if not cursor.records:
        return 1
    rows_per_part = max(1, cursor.row_start // len(cursor.records))
    return max(1, min(width, -(-(limit - cursor.row_start) // rows_per_part)))
