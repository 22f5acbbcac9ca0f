"""Plan parts: one corpus shard's token rows and documents, written once, read by row range.

Planning a shard has two steps so that the expensive one needs nothing from other shards:

1. `tokenize_shard` reads one corpus shard and tokenizes it. It depends on the shard
   alone, so any number of them run in parallel (Ray tasks, or one after another).
2. `publish_part` gives the shard its global numbering (first document, first content
   token, first window, first row: `PartOffsets`, known once the shards before it are
   published), lays it out as windows and writes `tokens/part-N.parquet`,
   `docs/part-N.parquet` and, last, the part's record `plan/part-N.json`. Its presence is
   the part's commit, as a unit record is a unit's.

The files themselves are written by part_files.py.

Legend: N rows, D documents.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline.store.corpus import Corpus, CorpusShard
from pipeline.store.layout import docs_part_file, part_record_file, tokens_part_file
from pipeline.store.meta import write_json_atomic
from pipeline.store.part_files import TokenPartSink, docs_file_bytes, hash_strings, write_file
from pipeline.store.plan import is_blank, tokenize_documents
from pipeline.store.windows import WindowSpec, closing_suffix, layout_shard

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DOCS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.int64()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("num_tokens", pa.int64()),
    ]
)
LAYOUT_CHUNK_TOKENS = 1 << 18  # content tokens laid out at once (bounds publish's memory)
_FIRST_BOUNDED_BATCH = 8  # documents read first under max_tokens; doubled up to batch_size


@dataclass(frozen=True, kw_only=True)
class ShardTokens:
    """A tokenized corpus shard: what step 1 hands to step 2 (picklable, no tokenizer)."""

    shard: CorpusShard
    sources: list[str]
    texts: list[str]
    num_replaced_chars: np.ndarray  # int64 [D]
    lengths: np.ndarray  # int64 [D] tokens per document (0 for blank ones)
    token_ids: np.ndarray  # int32, all documents' tokens concatenated
    vocab_ids: np.ndarray  # int32 sorted ids used here, special tokens included
    vocab_tokens: list[str]  # tokenizer.convert_ids_to_tokens(vocab_ids)

    @property
    def num_documents(self) -> int:
        return len(self.texts)


def tokenize_shard(
    corpus: Corpus,
    shard: CorpusShard,
    tokenizer: PreTrainedTokenizerBase,
    spec: WindowSpec,
    rows_left: int | None = None,
    docs_left: int | None = None,
    batch_size: int = 256,
) -> ShardTokens:
    """Read and tokenize one shard (step 1); depends on nothing but the shard.

    rows_left / docs_left: upper bounds on what the plan still needs (max_tokens and
    max_documents minus what earlier parts hold, or anything larger). Reading stops once
    they are met, so `max_tokens=4096` reads a few documents, not a whole shard; what is
    kept is decided by `publish_part` from exact offsets, so the bound only saves work.
    """
    documents, per_doc, num_tokens = [], [], 0
    reader = corpus.read_shard(shard)
    bounded = rows_left is not None or docs_left is not None
    size = _FIRST_BOUNDED_BATCH if bounded else batch_size  # a bound may need a few documents
    while (rows_left is None or num_tokens < rows_left) and (
        docs_left is None or len(documents) < docs_left
    ):
        batch = list(itertools.islice(reader, size))
        if not batch:
            break
        documents += batch
        per_doc += tokenize_documents(batch, tokenizer, batch_size=size)
        num_tokens += sum(len(ids) for ids in per_doc[-len(batch) :])
        size = min(2 * size, batch_size)
    lengths = np.array([len(ids) for ids in per_doc], dtype=np.int64)
    token_ids = np.concatenate(per_doc) if per_doc else np.zeros(0, np.int32)
    specials = [*spec.prefix, *spec.suffix] + (
        [spec.separator] if spec.separator is not None else []
    )
    used = np.concatenate([token_ids, np.asarray(specials, np.int32)])
    vocab_ids = np.flatnonzero(np.bincount(used)) if len(used) else np.zeros(0, np.int64)
    return ShardTokens(
        shard=shard,
        sources=[doc.source for doc in documents],
        texts=[doc.text for doc in documents],
        num_replaced_chars=np.array([d.num_replaced_chars for d in documents], dtype=np.int64),
        lengths=lengths,
        token_ids=token_ids.astype(np.int32, copy=False),
        vocab_ids=vocab_ids.astype(np.int32),
        vocab_tokens=tokenizer.convert_ids_to_tokens(vocab_ids.tolist()),
    )


@dataclass(frozen=True, kw_only=True)
class PartOffsets:
    """Where a part starts in the store's global numbering, and what is left to plan."""

    part: int
    doc_start: int
    content_start: int
    window_start: int
    row_start: int
    rows_left: int | None  # max_tokens minus rows before this part (None: no limit)
    docs_left: int | None  # max_documents minus documents before (None: no limit)


@dataclass(frozen=True, kw_only=True)
class PartWriter:
    """Where and how parts are written: fixed for a store."""

    root: Path
    spec: WindowSpec
    rows_per_unit: int
    name_width: int
    fsync: bool = True


def publish_part(writer: PartWriter, tokens: ShardTokens, at: PartOffsets) -> dict[str, Any]:
    """Lay out one tokenized shard at its global offsets and commit it (step 2).

    The shard is laid out a chunk of documents at a time (windows are defined on global
    offsets, so chunks join exactly as the whole shard would), keeping memory bounded by
    LAYOUT_CHUNK_TOKENS rather than by the shard.
    """
    num_docs = documents_needed(tokens.lengths, at.rows_left, at.docs_left)
    lengths = tokens.lengths[:num_docs]
    ends = np.cumsum(lengths)
    sink = TokenPartSink(
        at.row_start, writer.rows_per_unit, (tokens.vocab_ids, tokens.vocab_tokens), at.rows_left
    )
    num_content = num_windows = 0
    last_doc_id = None
    for chunk in _document_chunks(lengths, LAYOUT_CHUNK_TOKENS):
        layout = layout_shard(
            [tokens.token_ids[ends[i] - lengths[i] : ends[i]] for i in chunk],
            at.doc_start + chunk,
            writer.spec,
            content_start=at.content_start + num_content,
            window_start=at.window_start + num_windows,
        )
        sink.append(layout.rows)
        num_content += layout.num_content
        num_windows += layout.num_windows_started
        last_doc_id = layout.last_doc_id
    docs = pa.Table.from_arrays(
        [
            pa.array(at.doc_start + np.arange(num_docs, dtype=np.int64)),
            pa.array(tokens.sources[:num_docs], pa.string()),
            pa.array(tokens.texts[:num_docs], pa.string()),
            pa.array(lengths),
        ],
        schema=DOCS_SCHEMA,
    )
    stats = {
        "num_documents": num_docs,
        "num_skipped_empty": sum(is_blank(text) for text in tokens.texts[:num_docs]),
        "num_replaced_chars": int(tokens.num_replaced_chars[:num_docs].sum()),
        "num_tokens": int(lengths.sum()),
    }
    record = _commit_files(writer, at, sink, docs, stats)
    record.update(
        shard=tokens.shard.to_dict(),
        content_stop=at.content_start + num_content,
        window_stop=at.window_start + num_windows,
        last_doc_id=last_doc_id,
        docs_exhausted=at.docs_left is not None and num_docs == at.docs_left,
        docs_dropped=tokens.num_documents - num_docs,
    )
    _write_record(writer, at.part, record)
    return record


def _document_chunks(lengths: np.ndarray, chunk_tokens: int) -> list[np.ndarray]:
    """Indices of the non-empty documents, cut into runs of about chunk_tokens tokens
    (a longer document is a run of its own)."""
    kept = np.flatnonzero(lengths > 0)
    if len(kept) == 0:
        return []
    before = np.cumsum(lengths[kept]) - lengths[kept]
    return np.split(kept, np.flatnonzero(np.diff(before // chunk_tokens)) + 1)


def documents_needed(lengths: np.ndarray, rows_left: int | None, docs_left: int | None) -> int:
    """How many of a shard's documents the plan keeps: all, or up to the one whose tokens
    reach rows_left (every token is at least one row, so those rows suffice), and at most
    docs_left. A pure function of the offsets, so parallel and serial planning agree."""
    num_docs = len(lengths)
    if docs_left is not None:
        num_docs = min(num_docs, docs_left)
    if rows_left is not None:
        reached = np.flatnonzero(np.cumsum(lengths[:num_docs]) >= rows_left)
        if len(reached):
            num_docs = int(reached[0]) + 1
    return num_docs


def publish_closing_part(
    writer: PartWriter, at: PartOffsets, last_doc_id: int, vocab: tuple[np.ndarray, list[str]]
) -> dict[str, Any] | None:
    """Packing: the suffix of the corpus's last window as a final part (None if not needed)."""
    rows = closing_suffix(writer.spec, num_content=at.content_start, last_doc_id=last_doc_id)
    if len(rows) == 0:
        return None
    zero = {"num_documents": 0, "num_skipped_empty": 0, "num_replaced_chars": 0, "num_tokens": 0}
    sink = TokenPartSink(at.row_start, writer.rows_per_unit, vocab, at.rows_left)
    sink.append(rows)
    record = _commit_files(writer, at, sink, pa.Table.from_pylist([], DOCS_SCHEMA), zero)
    record.update(
        shard=None,
        content_stop=at.content_start,
        window_stop=at.window_start,
        last_doc_id=last_doc_id,
        docs_exhausted=False,
    )
    _write_record(writer, at.part, record)
    return record


def _write_record(writer: PartWriter, part: int, record: dict[str, Any]) -> None:
    path = part_record_file(writer.root, part, writer.name_width)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def _commit_files(
    writer: PartWriter,
    at: PartOffsets,
    sink: TokenPartSink,
    docs: pa.Table,
    stats: dict[str, int],
) -> dict[str, Any]:
    """Write the part's token and docs files (not yet its record); return the record."""
    digest = hashlib.sha256(sink.digest.hexdigest().encode())
    for column in ("source", "text"):
        hash_strings(digest, docs.column(column).combine_chunks())
    width, root = writer.name_width, writer.root
    tokens_path = tokens_part_file(root, at.part, width)
    docs_path = docs_part_file(root, at.part, width)
    return {
        "part": at.part,
        "row_start": at.row_start,
        "row_stop": sink.row_stop,
        "doc_start": at.doc_start,
        "doc_stop": at.doc_start + docs.num_rows,
        "content_start": at.content_start,
        "window_start": at.window_start,
        "rows_cut": sink.rows_cut,
        "last_window": sink.last_window,
        **stats,
        "digest": digest.hexdigest(),
        "tokens": write_file(
            root, tokens_path, sink.close(), sink.row_stop - at.row_start, writer.fsync
        ),
        "docs": write_file(root, docs_path, docs_file_bytes(docs), docs.num_rows, writer.fsync),
    }


def special_vocab(spec: WindowSpec, tokenizer: PreTrainedTokenizerBase):
    """(ids, strings) of the spec's special tokens, for the closing part."""
    ids = np.unique(np.asarray([*spec.prefix, *spec.suffix], dtype=np.int32))
    return ids, tokenizer.convert_ids_to_tokens(ids.tolist())


def read_part_record(root: Path, part: int, width: int) -> dict[str, Any] | None:
    """The part's record, or None when the part is not committed."""
    path = part_record_file(root, part, width)
    if not path.is_file():
        return None
    return json.loads(path.read_text())
