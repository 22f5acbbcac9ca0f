"""Corpora cut into independently readable shards, planned from metadata alone.

A corpus of 10^9 tokens is planned shard by shard, in parallel, so nothing here reads the
whole corpus up front. `Corpus.shards()` looks only at metadata (file sizes, Parquet
footers, Arrow IPC message headers) and `Corpus.read_shard()` reads one shard alone:

- Plain JSONL and one-document-per-line text are cut into fixed byte ranges
  [k * shard_bytes, (k + 1) * shard_bytes) of each file. Cutting needs only the file size,
  not a scan for line ends: a shard owns the lines whose first byte lies in its range, so it
  skips the partial line it starts in and finishes the line it ends in, and every line
  belongs to exactly one shard. A range inside one long line holds no records. A line ends
  at b"\n"; that byte and a b"\r" before it are not part of the record, so CRLF files read
  like LF files (a lone b"\r" is not a line end).
- Such records are named by the byte offset of their line (`path@offset`), not by a line
  number, because a line number would depend on every earlier shard; an offset is known to
  the shard itself, and `seek` finds the record again.
- A compressed JSONL file (`.gz`, `.zst`) cannot be entered in the middle, so it is one
  shard, streamed with bounded memory; its records keep line numbers (`path:line`).
- Parquet files are cut into runs of whole row groups, Hugging Face `save_to_disk` folders
  into runs of whole record batches of one Arrow file, whole-file text into runs of whole
  files: a run holds at most `shard_bytes` (by the footer's or the batch's uncompressed
  size, or the file size), or one unit when that unit alone is larger.

Document ids count every document the source yields, in source order (shards in order,
records within a shard), starting at 0. `read_shard` numbers a shard's documents from 0 and
the planner adds the shard's global offset; `iter(corpus)` does the same for a whole pass.
Empty and whitespace-only documents keep their id (the token plan skips and counts them), so
a doc id always points back at the same record. (Blank lines of a JSONL file are not records
and get no id; in a plain-text corpus with `one_per_line=True` every line is a record.)

Text is decoded as UTF-8 with `errors="replace"`; each document carries the number of
U+FFFD characters the decoder inserted (`num_replaced_chars`), which the plan sums into its
stats. Literal U+FFFD characters present in valid UTF-8 are not counted.

`fingerprint()` hashes the config (minus the path spelling) and each file's name relative
to the files' common folder and its size: cheap on any corpus, and unchanged when the corpus
is copied to another machine (mtimes would not be). Content digests belong to the planner,
which computes them shard by shard while it reads. On object storage (`s3://...`) the same
name-and-size fingerprint is taken from the listing: the same files uploaded fingerprint
like the files on disk; ETags are left out because they depend on how an object was
uploaded (a multipart upload's ETag is not the content's MD5), and so are mtimes.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.checks import check_bool, check_choice, check_int, check_str
from pipeline.store.corpus_readers import decode_utf8, list_files, make_reader
from pipeline.store.location import is_url

__all__ = ["CORPUS_KINDS", "Corpus", "CorpusConfig", "CorpusShard", "Document", "decode_utf8"]

CORPUS_KINDS = ("jsonl", "parquet", "text", "hf_disk", "pydoc")


@dataclass(frozen=True, slots=True)
class Document:
    """One record of a corpus: `doc_id` is its index in source order."""

    doc_id: int
    source: str
    text: str
    num_replaced_chars: int = 0


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """Where the documents come from.

    kind: one of "jsonl", "parquet", "text", "hf_disk", "pydoc".
    path: a glob (jsonl, text), a glob or folder (parquet; a folder means every `*.parquet`
        under it), a `datasets.save_to_disk` folder (hf_disk), or None (pydoc: the Python
        reference manual topics embedded in every Python). jsonl, parquet and text may be
        on object storage (`s3://bucket/prefix/*.jsonl`), read in ranges, not downloaded.
    text_field: the JSON key (jsonl) or column (parquet, hf_disk) holding the text.
    one_per_line: text only; every line of every file is a document instead of every file.
    split: hf_disk only; the split to read when the folder holds a DatasetDict.
    max_documents: read at most this many documents (counting empty ones); None for all.
    shard_bytes: target input bytes per shard (byte range of a file, or a run of row
        groups, record batches or files); part of the fingerprint, since it fixes the shards.
    """

    kind: str
    path: str | None = None
    text_field: str = "text"
    one_per_line: bool = False
    split: str | None = None
    max_documents: int | None = None
    shard_bytes: int = 4 * 2**20

    def __post_init__(self) -> None:
        check_choice("corpus.kind", self.kind, CORPUS_KINDS)
        if self.kind == "pydoc" and self.path is not None:
            raise ValueError("corpus.path must be null for kind 'pydoc' (the corpus is embedded)")
        if self.kind != "pydoc" and not self.path:
            raise ValueError(f"corpus.path is required for kind {self.kind!r}")
        check_str("corpus.path", self.path, optional=True)
        if self.kind == "hf_disk" and is_url(self.path):
            raise ValueError(
                "corpus.path must be a local folder for kind 'hf_disk' (object storage is read "
                "for jsonl, parquet and text); copy the folder to local disk first"
            )
        check_str("corpus.text_field", self.text_field)
        check_bool("corpus.one_per_line", self.one_per_line)
        if self.one_per_line and self.kind != "text":
            raise ValueError("corpus.one_per_line applies only to kind 'text'")
        check_str("corpus.split", self.split, optional=True)
        if self.split is not None and self.kind != "hf_disk":
            raise ValueError("corpus.split applies only to kind 'hf_disk'")
        check_int("corpus.max_documents", self.max_documents, optional=True)
        check_int("corpus.shard_bytes", self.shard_bytes)


@dataclass(frozen=True, kw_only=True)
class CorpusShard:
    """One independently readable piece of a corpus (small, picklable, JSON-able).

    index: 0..num_shards-1 in corpus order.
    path: the file it reads (the Arrow file for hf_disk; the first file of the run for
        whole-file text); None for pydoc.
    start, stop: what the shard covers, per kind:
        jsonl (plain), text with one_per_line: byte offsets in `path`; the shard's records
            are the lines whose first byte lies in [start, stop).
        jsonl compressed (.gz, .zst): 0 and the compressed file size (the whole file).
        parquet: row offsets in `path`, on row-group boundaries.
        hf_disk: row offsets in the Arrow file `path`, on record-batch boundaries.
        text (a document per file): indices into `Corpus.files()`.
        pydoc: topic indices in name order.
    """

    index: int
    path: str | None
    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.index < 0 or not 0 <= self.start <= self.stop:
            raise ValueError(f"shard needs index >= 0 and 0 <= start <= stop, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CorpusShard:
        return cls(**values)


class Corpus:
    """A corpus read lazily: shard by shard, or `for doc in Corpus(config)` in id order."""

    def __init__(self, config: CorpusConfig) -> None:
        self.config = config
        self._reader = make_reader(config)

    def shards(self) -> list[CorpusShard]:
        """The shards in corpus order, from metadata only (no document text is read)."""
        spans = self._reader.plan()
        return [
            CorpusShard(index=i, path=path, start=start, stop=stop)
            for i, (path, start, stop) in enumerate(spans)
        ]

    def read_shard(self, shard: CorpusShard) -> Iterator[Document]:
        """The shard's documents in order, with doc_id counted from 0 within the shard.

        max_documents is not applied here: the planner applies it over the whole corpus.
        """
        records = self._reader.read(shard.path, shard.start, shard.stop)
        for doc_id, (source, text, num_replaced) in enumerate(records):
            yield Document(doc_id, source, text, num_replaced)

    def __iter__(self) -> Iterator[Document]:
        limit = self.config.max_documents
        doc_id = 0
        for shard in self.shards():
            for doc in self.read_shard(shard):
                yield Document(doc_id, doc.source, doc.text, doc.num_replaced_chars)
                doc_id += 1
                if doc_id == limit:
                    return

    def files(self) -> list[Path]:
        """The input files in read order (empty for pydoc; `UPath`s for a URL)."""
        return list_files(self.config)

    def fingerprint(self) -> str:
        """sha256 over the config (without the path spelling) and every file's name and size."""
        digest = hashlib.sha256()
        config = asdict(self.config)
        config.pop("path")
        digest.update(json.dumps(config, sort_keys=True).encode())
        if self.config.kind == "pydoc":
            from pydoc_data.topics import topics

            digest.update(json.dumps(topics, sort_keys=True).encode())
        files = self.files()
        for path, name in zip(files, _relative_names(files), strict=True):
            digest.update(name.encode() + b"\0")
            digest.update(str(path.stat().st_size).encode() + b"\0")
            if self.config.kind == "hf_disk" and path.name == "state.json":
                digest.update(str(json.loads(path.read_text()).get("_fingerprint")).encode())
        return digest.hexdigest()


def _relative_names(files: list[Path]) -> list[str]:
    """Each file's name relative to the files' common folder (URLs: within the bucket)."""
    if not files:
        return []
    if not is_url(files[0]):
        root = os.path.commonpath([p.parent for p in files])
        return [os.path.relpath(path, root) for path in files]
    keys = [str(path).split("://", 1)[1] for path in files]
    root = posixpath.commonpath([posixpath.dirname(key) for key in keys])
    return [posixpath.relpath(key, root) for key in keys]
