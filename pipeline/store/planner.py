"""Plan a whole corpus shard by shard, with state per shard and never per token.

`PlanCursor` is the planner's whole memory: the global offsets where the next part starts
and running totals, advanced by each part's small record. Parts are committed in shard
order (a part's numbering needs the counts of the parts before it), while tokenizing,
the expensive step, needs nothing from other shards and may run ahead in parallel
(`pipeline.distributed.planning` does that with Ray tasks; `plan_corpus` here runs one
shard after another and leans on the tokenizer's own multi-threaded batch encoding).

Resuming: a rerun replays the records of the longest committed prefix of parts and plans
from there; files of later parts are rewritten with the same bytes. `max_tokens` and
`max_documents` stop planning at the part that reaches them: later shards are never read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.store.corpus import Corpus, CorpusShard
from pipeline.store.layout import part_name_width
from pipeline.store.parts import (
    PartOffsets,
    PartWriter,
    publish_closing_part,
    publish_part,
    read_part_record,
    special_vocab,
    tokenize_shard,
)
from pipeline.store.plan import PlanConfig, PlanStats, window_spec
from pipeline.store.windows import closing_suffix

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class PlanCursor:
    """Offsets of the next part and totals so far; advanced by part records in order."""

    config: PlanConfig
    max_documents: int | None
    num_shards: int
    part: int = 0
    doc_start: int = 0
    content_start: int = 0
    window_start: int = 0
    row_start: int = 0
    last_doc_id: int | None = None
    finished: bool = False  # no more shards to read: corpus exhausted or a limit reached
    truncated: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    def offsets(self) -> PartOffsets:
        limit = self.config.max_tokens
        return PartOffsets(
            part=self.part,
            doc_start=self.doc_start,
            content_start=self.content_start,
            window_start=self.window_start,
            row_start=self.row_start,
            rows_left=None if limit is None else limit - self.row_start,
            docs_left=None if self.max_documents is None else self.max_documents - self.doc_start,
        )

    def matches(self, record: dict[str, Any], shard: CorpusShard | None) -> bool:
        """Whether a committed record is the part this cursor would write next."""
        expected = (self.part, self.doc_start, self.content_start, self.row_start)
        got = tuple(record.get(k) for k in ("part", "doc_start", "content_start", "row_start"))
        return got == expected and record.get("shard") == (shard.to_dict() if shard else None)

    def advance(self, record: dict[str, Any]) -> None:
        assert record["part"] == self.part and record["row_start"] == self.row_start
        self.records.append(_summary(record))
        self.part += 1
        self.doc_start = record["doc_stop"]
        self.content_start = record["content_stop"]
        self.window_start = record["window_stop"]
        self.row_start = record["row_stop"]
        if record["last_doc_id"] is not None:
            self.last_doc_id = record["last_doc_id"]
        if record["rows_cut"] or self.rows_full:
            self.finished = True
            left = bool(record.get("docs_dropped")) or self.part < self.num_shards
            self.truncated = bool(record["rows_cut"]) or left  # rows cut, or documents unread
        if record["docs_exhausted"] or record["shard"] is None:
            self.finished = True

    @property
    def rows_full(self) -> bool:
        """max_tokens rows are planned."""
        limit = self.config.max_tokens
        return limit is not None and self.row_start >= limit

    def stats(self) -> PlanStats:
        totals = {
            key: sum(r[key] for r in self.records)
            for key in ("num_documents", "num_skipped_empty", "num_replaced_chars", "num_tokens")
        }
        windows = [r["last_window"] for r in self.records if r["last_window"] is not None]
        return PlanStats(
            **totals,
            num_rows=self.row_start,
            num_windows=max(windows) + 1 if windows else 0,
            truncated_by_max_tokens=self.truncated,
            num_shards=sum(1 for r in self.records if r["shard"] is not None),
        )

    def fingerprint(self) -> str:
        """sha256 over the parts' content digests, in order: equal plans, equal stores."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(record["digest"].encode())
        return digest.hexdigest()


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the cursor keeps of a record (O(1) per part)."""
    keys = (
        "part", "row_start", "row_stop", "doc_start", "doc_stop", "num_documents",
        "num_skipped_empty", "num_replaced_chars", "num_tokens", "digest", "shard",
        "last_window",
    )  # fmt: skip
    return {key: record.get(key) for key in keys}


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    """What store.json records of a finished plan."""

    stats: PlanStats
    fingerprint: str
    parts: list[dict[str, int]]  # part, row_start, row_stop, doc_start, doc_stop
    part_name_width: int

    @property
    def num_rows(self) -> int:
        return self.stats.num_rows


def start_plan(
    root: Path,
    corpus: Corpus,
    tokenizer: PreTrainedTokenizerBase,
    config: PlanConfig,
    fsync: bool = True,
) -> tuple[PlanCursor, PartWriter, list[CorpusShard]]:
    """The cursor after the committed prefix of parts, and the shards still to plan."""
    shards = corpus.shards()
    writer = PartWriter(
        root=root,
        spec=window_spec(tokenizer, config),
        rows_per_unit=config.rows_per_unit,
        name_width=part_name_width(len(shards) + 1),
        fsync=fsync,
    )
    cursor = PlanCursor(
        config=config, max_documents=corpus.config.max_documents, num_shards=len(shards)
    )
    while cursor.part <= len(shards):
        record = read_part_record(root, cursor.part, writer.name_width)
        reading = cursor.part < len(shards) and not cursor.finished
        if record is None or not cursor.matches(record, shards[cursor.part] if reading else None):
            break
        cursor.advance(record)
        if record["shard"] is None:  # the closing part is the last
            break
    return cursor, writer, shards[cursor.part :]


def close_plan(
    cursor: PlanCursor, writer: PartWriter, tokenizer: PreTrainedTokenizerBase
) -> PlanResult:
    """Write the closing part when the last window needs its suffix; check; summarise."""
    closed = cursor.records and cursor.records[-1]["shard"] is None
    if not closed and not cursor.rows_full:
        record = publish_closing_part(
            writer,
            cursor.offsets(),
            cursor.last_doc_id if cursor.last_doc_id is not None else 0,
            special_vocab(writer.spec, tokenizer),
        )
        if record is not None:
            cursor.advance(record)
        cursor.finished = True
    elif not closed:  # max_tokens reached: it may have cut just the last window's suffix
        suffix = closing_suffix(writer.spec, num_content=cursor.content_start, last_doc_id=0)
        cursor.truncated = cursor.truncated or len(suffix) > 0
    stats = cursor.stats()
    if stats.num_rows == 0:
        raise ValueError(
            f"corpus produced no tokens: {stats.num_documents} documents, "
            f"{stats.num_skipped_empty} of them empty or whitespace-only"
        )
    parts = [
        {k: r[k] for k in ("part", "row_start", "row_stop", "doc_start", "doc_stop")}
        for r in cursor.records
    ]
    return PlanResult(
        stats=stats,
        fingerprint=cursor.fingerprint(),
        parts=parts,
        part_name_width=writer.name_width,
    )


def plan_corpus(
    root: Path,
    corpus: Corpus,
    tokenizer: PreTrainedTokenizerBase,
    config: PlanConfig,
    fsync: bool = True,
) -> PlanResult:
    """Plan `corpus` into the store at `root`, one shard at a time, resuming if begun.

    The tokenizer's batch encoding already uses every core of the process, so a thread
    tokenizing the next shard while this one is published gained nothing (measured).
    """
    cursor, writer, todo = start_plan(root, corpus, tokenizer, config, fsync)
    for shard in todo:
        if cursor.finished:
            break
        at = cursor.offsets()
        tokens = tokenize_shard(corpus, shard, tokenizer, writer.spec, at.rows_left, at.docs_left)
        cursor.advance(publish_part(writer, tokens, at))
    return close_plan(cursor, writer, tokenizer)
