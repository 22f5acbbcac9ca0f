"""Per-kind engines behind `pipeline.store.corpus`: cut a corpus into spans, read one span.

A reader's `plan()` lists spans `(path, start, stop)` from metadata alone (file sizes,
Parquet footers, Arrow IPC message headers), and `read(path, start, stop)` yields that
span's records as `(source, text, num_replaced_chars)`; `Corpus` turns spans into numbered
`CorpusShard`s (whose docstring says what start/stop mean per kind) and records into
`Document`s. Kept apart from `corpus.py` so that the public types stay short to read.

A corpus path may be a URL (`s3://bucket/prefix/*.jsonl`): files are listed with fsspec's
`glob`, planned from the listing's sizes and Parquet footers, and read through fsspec file
objects, which fetch only the byte ranges read (read-ahead bounded by `REMOTE_BLOCK`), so a
shard of a large object costs about its own bytes and no file is downloaded whole. Parquet
is read through those file objects with Arrow's threads off, never by handing the fsspec
filesystem to Arrow (`pipeline/store/location.py` says why).
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pipeline.store.location import is_url

if TYPE_CHECKING:
    from pipeline.store.corpus import CorpusConfig

Span = tuple[str | None, int, int]  # (path, start, stop)
Record = tuple[str, str, int]  # (source, text, num_replaced_chars)

_REPLACEMENT = "\ufffd"
_REPLACEMENT_UTF8 = _REPLACEMENT.encode()
_CODECS = {".gz": "gzip", ".zst": "zstd"}
REMOTE_BLOCK = 1 << 20  # bytes per ranged GET of a remote file, and the most read ahead


class Reader(Protocol):
    def plan(self) -> list[Span]: ...

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]: ...


def make_reader(cfg: CorpusConfig) -> Reader:
    return _READERS[cfg.kind](cfg)


def list_files(cfg: CorpusConfig) -> list[Path]:
    """The input files in read order (empty for pydoc)."""
    if cfg.kind == "pydoc":
        return []
    if cfg.kind == "hf_disk":
        return sorted(p for p in _hf_root(cfg).rglob("*") if p.is_file())
    if is_url(cfg.path):
        return _list_remote(cfg)
    pattern, skip_private = cfg.path, False
    if cfg.kind == "parquet" and os.path.isdir(cfg.path):
        pattern, skip_private = os.path.join(cfg.path, "**", "*.parquet"), True
    matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if skip_private:  # like pyarrow.dataset: `_name` files and folders are not data
        matches = [p for p in matches if not _has_private_part(p, cfg.path)]
    if not matches:
        raise ValueError(f"corpus.path {cfg.path!r} matched no files; check the path or glob")
    return [Path(p) for p in matches]


def _list_remote(cfg: CorpusConfig) -> list[Path]:
    """`list_files` on object storage: the same matches, as `UPath`s of the same filesystem."""
    import fsspec
    from upath import UPath

    fs, pattern = fsspec.core.url_to_fs(cfg.path)
    root = pattern.rstrip("/")
    fs.invalidate_cache()  # list afresh; the listing then answers every size query
    skip_private = cfg.kind == "parquet" and not glob.has_magic(root) and fs.isdir(root)
    if skip_private:
        pattern = posixpath.join(root, "**", "*.parquet")
    matches = sorted(
        p for p, info in fs.glob(pattern, detail=True).items() if info["type"] == "file"
    )
    if skip_private:
        matches = [p for p in matches if not _has_private_part(p, root)]
    if not matches:
        raise ValueError(f"corpus.path {cfg.path!r} matched no files; check the path or glob")
    return [UPath(fs.unstrip_protocol(p)) for p in matches]


def open_input(path: str | Path) -> BinaryIO:
    """A binary file: the local file, or for a remote one an fsspec file object that
    fetches only the byte ranges read, plus at most `REMOTE_BLOCK` ahead. The buffering is
    Python's: fsspec's own `readline` reads a block ahead per line and its read-ahead cache
    forgets what lies before its last fetch, so lines would be fetched several times."""
    if not is_url(path):
        return open(path, "rb")
    import fsspec

    fs, inner = fsspec.core.url_to_fs(str(path))
    return io.BufferedReader(fs.open(inner, "rb", cache_type="none"), REMOTE_BLOCK)


@contextlib.contextmanager
def open_parquet(path: str | Path):
    """A ParquetFile of a local file, or of a remote one read through a file object."""
    import pyarrow.parquet as pq

    if not is_url(path):
        with pq.ParquetFile(path) as parquet:
            yield parquet
        return
    with open_input(path) as handle, pq.ParquetFile(handle) as parquet:
        yield parquet


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode with replacement; return the text and how many characters were replaced."""
    text = raw.decode("utf-8", errors="replace")
    return text, text.count(_REPLACEMENT) - raw.count(_REPLACEMENT_UTF8)


def runs(sizes: Sequence[int], target: int) -> list[tuple[int, int]]:
    """Cut consecutive units into runs [lo, hi) of at most `target` (at least one unit each)."""
    out: list[tuple[int, int]] = []
    lo, total = 0, 0
    for i, size in enumerate(sizes):
        if i > lo and total + size > target:
            out.append((lo, i))
            lo, total = i, 0
        total += size
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out


def byte_ranges(path: Path, target: int) -> list[Span]:
    size = path.stat().st_size
    return [(str(path), lo, min(lo + target, size)) for lo in range(0, size, target)]


def iter_lines(path: str, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its end) for every line whose first byte lies in [start, stop)."""
    with open_input(path) as f:
        offset = start
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":  # start is inside a line that an earlier span owns
                offset += len(f.readline())
        while offset < stop:
            line = f.readline()
            if not line:
                return
            yield offset, line.removesuffix(b"\n").removesuffix(b"\r")
            offset += len(line)


def as_text(value: object, where: str, field: str) -> str:
    """Null counts as an empty document; anything but a string is a user error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _has_private_part(path: str, root: str) -> bool:
    return any(part.startswith("_") for part in Path(os.path.relpath(path, root)).parts)


def _missing_column(where: object, field: str, names: list[str]) -> ValueError:
    return ValueError(
        f"{where}: no column {field!r} (columns: {names}); "
        "set text_field to the column that holds the text"
    )


class JsonlReader:
    """Plain files split by byte range; compressed files are read whole, streaming."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg

    def plan(self) -> list[Span]:
        spans: list[Span] = []
        for path in list_files(self.cfg):
            if path.suffix not in _CODECS:
                spans += byte_ranges(path, self.cfg.shard_bytes)
            elif size := path.stat().st_size:
                spans.append((str(path), 0, size))
        return spans

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]:
        codec = _CODECS.get(Path(path).suffix)
        if codec is None:
            lines = ((f"{path}@{at}", raw) for at, raw in iter_lines(path, start, stop))
        else:
            lines = ((f"{path}:{n}", raw) for n, raw in _compressed_lines(path, codec))
        for where, raw in lines:
            if raw.strip():
                yield self._parse(raw, where)

    def _parse(self, raw: bytes, where: str) -> Record:
        line, replaced = decode_utf8(raw)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: line is not valid JSON ({e.msg})") from e
        field = self.cfg.text_field
        if not isinstance(record, dict) or field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"{where}: record has no field {field!r} (has {keys}); "
                "set text_field to the key that holds the text"
            )
        return where, as_text(record[field], where, field), replaced


def _compressed_lines(path: str, codec: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of a compressed file, with bounded memory."""
    import pyarrow as pa

    raw = pa.PythonFile(open_input(path), mode="r") if is_url(path) else pa.OSFile(path)
    with raw:  # closing a PythonFile closes the fsspec file too
        stream = io.BufferedReader(pa.CompressedInputStream(raw, codec), 1 << 20)
        for lineno, line in enumerate(stream, start=1):
            yield lineno, line.removesuffix(b"\n").removesuffix(b"\r")


class TextReader:
    """A document per file (runs of whole files), or per line (byte ranges)."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = list_files(self.cfg)
        return self._files

    def plan(self) -> list[Span]:
        files, target = self.files(), self.cfg.shard_bytes
        if self.cfg.one_per_line:
            return [span for path in files for span in byte_ranges(path, target)]
        sizes = [path.stat().st_size for path in files]
        return [(str(files[lo]), lo, hi) for lo, hi in runs(sizes, target)]

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]:
        if self.cfg.one_per_line:
            for at, raw in iter_lines(path, start, stop):
                yield (f"{path}@{at}", *decode_utf8(raw))
            return
        files = self.files()[start:stop]
        if not files or str(files[0]) != path:
            raise ValueError(f"shard of {path} [{start}:{stop}) does not match the corpus files")
        for file in files:
            yield (str(file), *decode_utf8(file.read_bytes()))


class ParquetReader:
    """Runs of consecutive row groups of one file, read column-only."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg

    def plan(self) -> list[Span]:
        spans: list[Span] = []
        for path in list_files(self.cfg):
            with open_parquet(path) as parquet:
                offsets, sizes = self._row_groups(parquet, path)
            for lo, hi in runs(sizes, self.cfg.shard_bytes):
                if offsets[lo] < offsets[hi]:
                    spans.append((str(path), offsets[lo], offsets[hi]))
        return spans

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]:
        field = self.cfg.text_field
        with open_parquet(path) as parquet:
            offsets, _ = self._row_groups(parquet, path)
            groups = [
                i for i in range(len(offsets) - 1) if offsets[i] < stop and offsets[i + 1] > start
            ]
            if not groups:
                return
            row = offsets[groups[0]]
            # Arrow threads must not call into fsspec (`open_parquet`); local reads keep them.
            threads = not is_url(path)
            batches = parquet.iter_batches(row_groups=groups, columns=[field], use_threads=threads)
            for batch in batches:
                for value in batch.column(0).to_pylist():
                    if start <= row < stop:
                        where = f"{path}#{row}"
                        yield where, as_text(value, where, field), 0
                    row += 1

    def _row_groups(self, parquet, path: object) -> tuple[list[int], list[int]]:
        """Row offsets of the row groups (plus the total) and their byte sizes."""
        names = parquet.schema_arrow.names
        if self.cfg.text_field not in names:
            raise _missing_column(path, self.cfg.text_field, names)
        meta = parquet.metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        offsets = [0]
        for group in groups:
            offsets.append(offsets[-1] + group.num_rows)
        return offsets, [group.total_byte_size for group in groups]


@dataclass(frozen=True)
class _ArrowFile:
    path: Path
    row_offset: int  # rows of the dataset's earlier files
    batch_rows: list[int]
    batch_bytes: list[int]


class HfDiskReader:
    """The Arrow stream files of a `datasets.save_to_disk` folder, read without `datasets`."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        self._listing: tuple[str, dict[str, _ArrowFile]] | None = None

    def plan(self) -> list[Span]:
        spans: list[Span] = []
        for file in self._arrow_files()[1].values():
            offsets = [0]
            for rows in file.batch_rows:
                offsets.append(offsets[-1] + rows)
            for lo, hi in runs(file.batch_bytes, self.cfg.shard_bytes):
                if offsets[lo] < offsets[hi]:
                    spans.append((str(file.path), offsets[lo], offsets[hi]))
        return spans

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]:
        import pyarrow as pa

        label, files = self._arrow_files()
        first = files[path].row_offset
        row = 0
        with pa.memory_map(path) as source:
            for batch in pa.ipc.open_stream(source):
                lo, hi = max(start - row, 0), min(stop - row, batch.num_rows)
                if lo < hi:
                    values = batch.column(self.cfg.text_field).slice(lo, hi - lo).to_pylist()
                    for k, value in enumerate(values):
                        where = f"{label}#{first + row + lo + k}"
                        yield where, as_text(value, where, self.cfg.text_field), 0
                row += batch.num_rows
                if row >= stop:
                    return

    def _arrow_files(self) -> tuple[str, dict[str, _ArrowFile]]:
        """(source label, arrow files by path in dataset order); computed once per reader."""
        if self._listing is None:
            folder, label = _hf_dataset_folder(self.cfg)
            files: dict[str, _ArrowFile] = {}
            row_offset = 0
            for path in _hf_data_files(folder):
                file = self._scan(path, row_offset)
                files[str(path)] = file
                row_offset += sum(file.batch_rows)
            self._listing = label, files
        return self._listing

    def _scan(self, path: Path, row_offset: int) -> _ArrowFile:
        """Batch sizes from the message headers; the memory map leaves the data unread."""
        import pyarrow as pa

        with pa.memory_map(str(path)) as source:
            stream = pa.ipc.open_stream(source)
            names = stream.schema.names
            if self.cfg.text_field not in names:
                raise _missing_column(self.cfg.path, self.cfg.text_field, names)
            batches = [(batch.num_rows, batch.nbytes) for batch in stream]
        return _ArrowFile(
            path, row_offset, [rows for rows, _ in batches], [size for _, size in batches]
        )


def _hf_root(cfg: CorpusConfig) -> Path:
    root = Path(cfg.path)
    if not root.is_dir():
        raise ValueError(f"corpus.path {cfg.path!r} is not a directory (hf_disk needs one)")
    return root


def _hf_dataset_folder(cfg: CorpusConfig) -> tuple[Path, str]:
    """The folder of the Dataset to read (the split's, for a DatasetDict) and its label."""
    root = _hf_root(cfg)
    dict_file = root / "dataset_dict.json"
    if not dict_file.is_file():
        return root, cfg.path
    splits = sorted(json.loads(dict_file.read_text())["splits"])
    split = cfg.split
    if split is None and len(splits) == 1:
        split = splits[0]
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {cfg.path!r}, got {split!r}")
    return root / split, f"{cfg.path}[{split}]"


def _hf_data_files(folder: Path) -> list[Path]:
    state_file = folder / "state.json"
    if not state_file.is_file():
        raise ValueError(f"{folder}: no state.json (not a datasets save_to_disk folder)")
    state = json.loads(state_file.read_text())
    if state.get("_indices_data_files") is not None:
        raise ValueError(
            f"{folder}: the dataset is a selection over an indices mapping; save it "
            "flattened with dataset.flatten_indices().save_to_disk(...) and read that folder"
        )
    return [folder / entry["filename"] for entry in state["_data_files"]]


class PydocReader:
    """The Python reference manual topics in name order: one small span."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg

    def plan(self) -> list[Span]:
        from pydoc_data.topics import topics

        return [(None, 0, len(topics))]

    def read(self, path: str | None, start: int, stop: int) -> Iterator[Record]:
        from pydoc_data.topics import topics

        for name in sorted(topics)[start:stop]:
            yield name, topics[name], 0


_READERS: dict[str, type[Reader]] = {
    "jsonl": JsonlReader,
    "parquet": ParquetReader,
    "text": TextReader,
    "hf_disk": HfDiskReader,
    "pydoc": PydocReader,
}
