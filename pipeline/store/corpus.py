"""Lazy corpus readers that give every document a stable id.

Document ids count every document the source yields, in source order (files in sorted glob
order, then lines / rows within a file), starting at 0. Empty and whitespace-only documents
are still yielded, with their id, and the token plan skips and counts them; so removing or
editing one document never renumbers the others, and a doc id always points back at the
same record of the source. (Exception: blank lines of a JSONL file are not records and get
no id; in a plain-text corpus with ``one_per_line=True`` every line is a record.)

Text files are decoded as UTF-8 with ``errors="replace"``; each document carries the
number of U+FFFD characters the decoder inserted (``num_replaced_chars``), which the plan
sums into its stats. Literal U+FFFD characters present in valid UTF-8 are not counted.

``fingerprint()`` hashes the config (minus the path spelling) plus, for every input file,
its name relative to the files' common folder, its size and a SHA-256 of its bytes. A
content hash costs one read of the corpus (about 1.5 GB/s) but survives copying the corpus
to another machine, where mtimes would change and make a resumable store look different.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

CORPUS_KINDS = ("jsonl", "parquet", "text", "hf_disk", "pydoc")
_REPLACEMENT = "\ufffd"
_REPLACEMENT_UTF8 = _REPLACEMENT.encode()


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
    path: a glob (jsonl, parquet, text), a `datasets.save_to_disk` folder (hf_disk), or
        None (pydoc: the Python reference manual topics embedded in every Python).
    text_field: the JSON key (jsonl) or column (parquet, hf_disk) holding the text.
    one_per_line: text only; every line of every file is a document instead of every file.
    split: hf_disk only; the split to read when the folder holds a DatasetDict.
    max_documents: read at most this many documents (counting empty ones); None for all.
    """

    kind: str
    path: str | None = None
    text_field: str = "text"
    one_per_line: bool = False
    split: str | None = None
    max_documents: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CORPUS_KINDS:
            raise ValueError(f"kind must be one of {list(CORPUS_KINDS)}, got {self.kind!r}")
        if self.kind == "pydoc" and self.path is not None:
            raise ValueError("path must be None for kind='pydoc' (the corpus is embedded)")
        if self.kind != "pydoc" and not self.path:
            raise ValueError(f"path is required for kind={self.kind!r}")
        if not self.text_field:
            raise ValueError("text_field must be a non-empty string")
        if self.one_per_line and self.kind != "text":
            raise ValueError("one_per_line applies only to kind='text'")
        if self.split is not None and self.kind != "hf_disk":
            raise ValueError("split applies only to kind='hf_disk'")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be >= 1 or None, got {self.max_documents}")


class Corpus:
    """Iterate a corpus lazily: `for doc in Corpus(config)` yields Documents in id order."""

    def __init__(self, config: CorpusConfig) -> None:
        self.config = config

    def __iter__(self) -> Iterator[Document]:
        limit = self.config.max_documents
        for doc in _READERS[self.config.kind](self.config):
            if limit is not None and doc.doc_id >= limit:
                return
            yield doc

    def files(self) -> list[Path]:
        """The input files in read order (empty for pydoc)."""
        cfg = self.config
        if cfg.kind == "pydoc":
            return []
        if cfg.kind == "hf_disk":
            root = Path(cfg.path)
            if not root.is_dir():
                raise ValueError(f"path {cfg.path!r} is not a directory (hf_disk needs one)")
            return sorted(p for p in root.rglob("*") if p.is_file())
        matches = sorted(p for p in glob.glob(cfg.path, recursive=True) if os.path.isfile(p))
        if not matches:
            raise ValueError(f"path {cfg.path!r} matched no files")
        return [Path(p) for p in matches]

    def fingerprint(self) -> str:
        """sha256 over the config (without the path spelling) and every file's bytes."""
        digest = hashlib.sha256()
        config = asdict(self.config)
        config.pop("path")
        digest.update(json.dumps(config, sort_keys=True).encode())
        files = self.files()
        if self.config.kind == "pydoc":
            from pydoc_data.topics import topics

            digest.update(json.dumps(topics, sort_keys=True).encode())
        root = os.path.commonpath([p.parent for p in files]) if files else ""
        for path in files:
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            digest.update(str(path.stat().st_size).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        return digest.hexdigest()


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode with replacement; return the text and how many characters were replaced."""
    text = raw.decode("utf-8", errors="replace")
    return text, text.count(_REPLACEMENT) - raw.count(_REPLACEMENT_UTF8)


def _read_text(cfg: CorpusConfig) -> Iterator[Document]:
    doc_id = 0
    for path in Corpus(cfg).files():
        raw = path.read_bytes()
        if not cfg.one_per_line:
            text, replaced = decode_utf8(raw)
            yield Document(doc_id, str(path), text, replaced)
            doc_id += 1
            continue
        for lineno, line in enumerate(raw.splitlines(), start=1):
            text, replaced = decode_utf8(line)
            yield Document(doc_id, f"{path}:{lineno}", text, replaced)
            doc_id += 1


def _read_jsonl(cfg: CorpusConfig) -> Iterator[Document]:
    doc_id = 0
    for path in Corpus(cfg).files():
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                line, replaced = decode_utf8(raw)
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: line is not valid JSON ({e.msg})") from e
                if not isinstance(record, dict) or cfg.text_field not in record:
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise ValueError(
                        f"{where}: record has no field {cfg.text_field!r} (has {keys}); "
                        "set text_field to the key that holds the text"
                    )
                text = _as_text(record[cfg.text_field], where, cfg.text_field)
                yield Document(doc_id, where, text, replaced)
                doc_id += 1


def _read_parquet(cfg: CorpusConfig) -> Iterator[Document]:
    import pyarrow.parquet as pq

    doc_id = 0
    for path in Corpus(cfg).files():
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if cfg.text_field not in names:
            raise ValueError(
                f"{path}: no column {cfg.text_field!r} (columns: {names}); "
                "set text_field to the column that holds the text"
            )
        row = 0
        for batch in parquet.iter_batches(columns=[cfg.text_field], batch_size=4096):
            for value in batch.column(0).to_pylist():
                where = f"{path}#{row}"
                yield Document(doc_id, where, _as_text(value, where, cfg.text_field))
                doc_id += 1
                row += 1


def _read_hf_disk(cfg: CorpusConfig) -> Iterator[Document]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "kind='hf_disk' needs the `datasets` package: pip install datasets "
            "(or pip install 'activation-pipeline[datasets]')"
        ) from e
    if not Path(cfg.path).is_dir():
        raise ValueError(f"path {cfg.path!r} is not a directory (hf_disk needs one)")
    loaded = datasets.load_from_disk(cfg.path)
    source = cfg.path
    if isinstance(loaded, dict):  # a DatasetDict: pick the split
        splits = sorted(loaded.keys())
        split = cfg.split
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in splits:
            raise ValueError(f"split must be one of {splits} for {cfg.path!r}, got {split!r}")
        loaded = loaded[split]
        source = f"{cfg.path}[{split}]"
    if cfg.text_field not in loaded.column_names:
        raise ValueError(
            f"{cfg.path}: no column {cfg.text_field!r} (columns: {loaded.column_names})"
        )
    doc_id = 0
    for batch in loaded.iter(batch_size=1024):
        for value in batch[cfg.text_field]:
            where = f"{source}#{doc_id}"
            yield Document(doc_id, where, _as_text(value, where, cfg.text_field))
            doc_id += 1


def _read_pydoc(cfg: CorpusConfig) -> Iterator[Document]:
    from pydoc_data.topics import topics

    for doc_id, name in enumerate(sorted(topics)):
        yield Document(doc_id, name, topics[name])


def _as_text(value: object, where: str, field: str) -> str:
    """Null counts as an empty document; anything but a string is a user error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


_READERS = {
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "text": _read_text,
    "hf_disk": _read_hf_disk,
    "pydoc": _read_pydoc,
}
