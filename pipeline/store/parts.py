"""Plan parts: one corpus shard's token rows and documents, written once, read by row range.

Planning a shard has two steps so that the expensive one needs nothing from other shards:

1. `tokenize_shard` reads one corpus shard and tokenizes it. It depends on the shard
   alone, so any number of them run in parallel (Ray tasks, or one after another).
2. `publish_part` gives the shard its global numbering (first document, first content
   token, first window, first row: `PartOffsets`, known once the shards before it are
   published), lays it out as windows and writes `tokens/part-N.parquet`,
   `docs/part-N.parquet` and, last, the part's record `plan/part-N.json`. Its presence is
   the part's commit, as a unit record is a unit's.

Token files keep row groups aligned to global multiples of `group_rows` (a multiple of
rows_per_unit), so reading one unit's rows decodes one or two row groups.

Legend: N rows, D documents.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.atomic import write_atomic
from pipeline.store.corpus import Corpus, CorpusShard
from pipeline.store.layout import docs_part_file, part_record_file, tokens_part_file
from pipeline.store.meta import write_json_atomic
from pipeline.store.plan import TOKEN_SCHEMA, is_blank, rows_digest, tokenize_documents
from pipeline.store.windows import RowArrays, WindowSpec, closing_suffix, layout_shard

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
TARGET_GROUP_ROWS = 65536


def group_rows(rows_per_unit: int) -> int:
    """Rows per Parquet row group: whole units, about TARGET_GROUP_ROWS."""
    return rows_per_unit * max(1, TARGET_GROUP_ROWS // rows_per_unit)


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
    while (rows_left is None or num_tokens < rows_left) and (
        docs_left is None or len(documents) < docs_left
    ):
        batch = list(itertools.islice(reader, batch_size))
        if not batch:
            break
        documents += batch
        per_doc += tokenize_documents(batch, tokenizer, batch_size=batch_size)
        num_tokens += sum(len(ids) for ids in per_doc[-len(batch) :])
    lengths = np.array([len(ids) for ids in per_doc], dtype=np.int64)
    token_ids = np.concatenate(per_doc) if per_doc else np.zeros(0, np.int32)
    specials = [*spec.prefix, *spec.suffix] + (
        [spec.separator] if spec.separator is not None else []
    )
    vocab_ids = np.unique(np.concatenate([token_ids, np.asarray(specials, np.int32)]))
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
    """Lay out one tokenized shard at its global offsets and commit it (step 2)."""
    num_docs = documents_needed(tokens.lengths, at.rows_left, at.docs_left)
    lengths = tokens.lengths[:num_docs]
    ends = np.cumsum(lengths)
    kept = np.flatnonzero(lengths > 0)
    layout = layout_shard(
        [tokens.token_ids[ends[i] - lengths[i] : ends[i]] for i in kept],
        at.doc_start + kept,
        writer.spec,
        content_start=at.content_start,
        window_start=at.window_start,
    )
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
    record = _commit_part(
        writer, at, layout.rows, (tokens.vocab_ids, tokens.vocab_tokens), docs, stats
    )
    record.update(
        shard=tokens.shard.to_dict(),
        content_stop=at.content_start + layout.num_content,
        window_stop=at.window_start + layout.num_windows_started,
        last_doc_id=layout.last_doc_id,
        docs_exhausted=at.docs_left is not None and num_docs == at.docs_left,
        docs_dropped=tokens.num_documents - num_docs,
    )
    _write_record(writer, at.part, record)
    return record


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
    record = _commit_part(writer, at, rows, vocab, pa.Table.from_pylist([], DOCS_SCHEMA), zero)
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


def special_vocab(spec: WindowSpec, tokenizer: PreTrainedTokenizerBase):
    """(ids, strings) of the spec's special tokens, for the closing part."""
    ids = np.unique(np.asarray([*spec.prefix, *spec.suffix], dtype=np.int32))
    return ids, tokenizer.convert_ids_to_tokens(ids.tolist())


def _commit_part(
    writer: PartWriter,
    at: PartOffsets,
    rows: RowArrays,
    vocab: tuple[np.ndarray, list[str]],
    docs: pa.Table,
    stats: dict[str, int],
) -> dict[str, Any]:
    """Write the part's token and docs files (record not yet written); return the record."""
    full_rows = len(rows)
    if at.rows_left is not None:
        rows = rows.head(max(0, min(full_rows, at.rows_left)))
    row_stop = at.row_start + len(rows)
    table = _token_table(rows, at.row_start, vocab)
    token_path = tokens_part_file(writer.root, at.part, writer.name_width)
    docs_path = docs_part_file(writer.root, at.part, writer.name_width)
    digest = hashlib.sha256(rows_digest(rows).encode())
    for column in ("source", "text"):
        for value in docs.column(column).to_pylist():
            digest.update(value.encode() + b"\0")
    return {
        "part": at.part,
        "row_start": at.row_start,
        "row_stop": row_stop,
        "doc_start": at.doc_start,
        "doc_stop": at.doc_start + docs.num_rows,
        "content_start": at.content_start,
        "window_start": at.window_start,
        "rows_cut": full_rows - len(rows),
        "last_window": int(rows.window[-1]) if len(rows) else None,
        **stats,
        "digest": digest.hexdigest(),
        "tokens": _write_parquet(
            writer, token_path, table, _group_sizes(at.row_start, row_stop, writer.rows_per_unit)
        ),
        "docs": _write_parquet(writer, docs_path, docs, [max(docs.num_rows, 1)]),
    }


def _token_table(rows: RowArrays, row_start: int, vocab: tuple[np.ndarray, list[str]]) -> pa.Table:
    vocab_ids, vocab_tokens = vocab
    where = np.searchsorted(vocab_ids, rows.token_id)
    strings = pa.array(vocab_tokens, pa.string()).take(pa.array(where, pa.int64()))
    columns = [
        pa.array(row_start + np.arange(len(rows), dtype=np.int64)),
        pa.array(rows.doc_id),
        pa.array(rows.window),
        pa.array(rows.position),
        pa.array(rows.token_id),
        pa.array(rows.is_special),
        strings,
    ]
    return pa.Table.from_arrays(columns, schema=TOKEN_SCHEMA)


def _group_sizes(row_start: int, row_stop: int, rows_per_unit: int) -> list[int]:
    """Row group sizes that cut [row_start, row_stop) at global multiples of group_rows."""
    size = group_rows(rows_per_unit)
    cuts = list(range((row_start // size + 1) * size, row_stop, size))
    bounds = [row_start, *cuts, row_stop]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [1]


def _write_parquet(
    writer: PartWriter, path: Path, table: pa.Table, groups: Sequence[int]
) -> dict[str, Any]:
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as out:
        if table.num_rows == 0:
            out.write_table(table)
        offset = 0
        for size in groups:
            if offset >= table.num_rows:
                break
            out.write_table(table.slice(offset, size), row_group_size=size)
            offset += size
    payload = sink.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, [payload], fsync=writer.fsync)
    return {
        "path": path.relative_to(writer.root).as_posix(),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": payload.size,
        "num_rows": table.num_rows,
    }


def read_part_record(root: Path, part: int, width: int) -> dict[str, Any] | None:
    """The part's record, or None when the part is not committed."""
    path = part_record_file(root, part, width)
    if not path.is_file():
        return None
    return json.loads(path.read_text())
