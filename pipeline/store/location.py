"""Where a store lives: a local folder, or a prefix on object storage (`s3://bucket/prefix`).

One stack for every remote read: fsspec. A URL becomes a `UPath` (universal-pathlib:
pathlib's API over an fsspec filesystem, s3fs for `s3://`), so the store code keeps
writing `root / "store.json"`, `.is_file()`, `.iterdir()`, `.read_text()`; Zarr opens the
same URL through its `FsspecStore`; Parquet files are read through file objects from the
same filesystem. pandas, pyarrow and zarr users reach the same objects with
`storage_options` (docs/operations.md). Local paths stay plain `pathlib.Path`, untouched.

Credentials and the endpoint come only from the standard places, read by botocore: the
`AWS_*` environment variables (`AWS_ENDPOINT_URL` for S3-compatible services such as MinIO
or R2), `~/.aws` profiles (`AWS_PROFILE`), instance and pod roles. Nothing here takes a
secret as an argument, so none can reach store.json, a record, a log or an error message.

Parquet is read through Python file objects rather than handing the fsspec filesystem to
`pyarrow.dataset`: Arrow's own threads calling back into fsspec abort the interpreter at
exit ("terminate called without an active exception"; pyarrow 24 with s3fs 2026.9).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

URL_SCHEMES = ("s3://", "gs://", "gcs://", "memory://")


def is_url(path: str | os.PathLike) -> bool:
    return str(path).startswith(URL_SCHEMES)


def require_bucket(path: Path, what: str) -> None:
    """Refuse, in one line, a URL whose bucket does not exist or cannot be reached.

    Checked before a job writes, because creating a "folder" on object storage would
    otherwise create the bucket itself (s3fs's mkdir) or fail deep inside an upload.
    """
    if not is_url(path):
        return
    bucket = path.path.split("/")[0]
    if not path.fs.exists(bucket):
        raise ValueError(
            f"cannot write {what} {path}: the bucket {bucket!r} does not exist or is not "
            "reachable with the credentials and endpoint of this environment (AWS_* "
            "variables, AWS_PROFILE, the instance's role; AWS_ENDPOINT_URL for "
            "S3-compatible services)"
        )


def make_folder(path: Path) -> None:
    """`mkdir -p` for a local folder; nothing on object storage, where folders are only
    key prefixes (and s3fs's mkdir would create a missing bucket)."""
    if not is_url(path):
        path.mkdir(parents=True, exist_ok=True)


def upload_folder(local: Path, remote: Path, last: str | None = None) -> None:
    """Copy every file under the local folder `local` to the prefix `remote`, one object
    each, the top-level file named `last` after all the others (a marker of completeness)."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)  # stable: last goes last
    for batch in (files[:-1], files[-1:]) if last else (files,):
        if batch:
            targets = [f"{remote.path}/{p.relative_to(local).as_posix()}" for p in batch]
            remote.fs.put([str(p) for p in batch], targets)


def append_lines(path: Path, lines: list[str]) -> None:
    """Append text lines to a log file.

    Object storage cannot append, so there the object is rewritten whole with the new
    lines; the logs written this way (training metrics, checkpoint evaluations) hold one
    line per log interval or checkpoint, kilobytes for a whole run.
    """
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if not is_url(path):
        with path.open("a") as log:
            log.write(text)
        return
    earlier = path.read_text() if path.exists() else ""
    path.write_text(earlier + text)


def store_path(path: str | os.PathLike) -> Path:
    """A local `Path`, or a `UPath` for a URL (a pathlib.Path look-alike over fsspec)."""
    if is_url(path):
        from upath import UPath

        return UPath(str(path))
    return Path(path)


def resolve(path: str | os.PathLike) -> str:
    """An absolute path for a local folder (`~` expanded), a URL unchanged (as text)."""
    if is_url(path):
        return str(path).rstrip("/")
    return str(Path(path).expanduser().resolve())


def parquet_file(path: Path) -> pq.ParquetFile:
    """A ParquetFile that reads only the row groups asked for, locally or remotely."""
    if is_url(path):
        return pq.ParquetFile(path.open("rb"))
    return pq.ParquetFile(path)


def read_table(path: Path, columns: list[str] | None = None, filters=None) -> pa.Table:
    """`pq.read_table` of one Parquet file, locally or as an object (row groups outside
    `filters` are skipped by their statistics either way)."""
    if not is_url(path):
        return pq.read_table(path, columns=columns, filters=filters)
    with path.open("rb") as handle:
        return pq.read_table(handle, columns=columns, filters=filters)


def parquet_files(folder: Path) -> list[Path]:
    """The `*.parquet` files of a folder in name order (hidden temps are not data)."""
    return sorted(
        (p for p in folder.iterdir() if p.name.endswith(".parquet") and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def parquet_batches(folder: Path, columns: list[str]) -> pa.RecordBatchReader:
    """A one-pass stream of `columns` over every Parquet file of a folder, a row group at
    a time: what pyarrow's streaming plans (`acero`) scan without holding the folder."""
    files = parquet_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no Parquet files")
    schema = parquet_file(files[0]).schema_arrow
    schema = pa.schema([schema.field(name) for name in columns])

    def batches():
        for path in files:
            source = parquet_file(path)
            yield from source.iter_batches(columns=columns)

    return pa.RecordBatchReader.from_batches(schema, batches())


def read_parquet_folder(folder: Path) -> pa.Table:
    """Every `*.parquet` file of a folder, in name order, as one table."""
    if not is_url(folder):
        return pads.dataset(folder, format="parquet").to_table()
    tables = []
    for path in parquet_files(folder):
        with path.open("rb") as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables) if tables else pa.table({})


def zarr_store(path: Path, read_only: bool = True):
    """What `zarr.open_group` takes for this folder: the path, or an FsspecStore."""
    if not is_url(path):
        return path
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), read_only=read_only)


def remove_tree(path: Path) -> None:
    """Delete a folder and everything under it (on object storage: every object under the
    prefix)."""
    if is_url(path):
        path.fs.rm(path.path, recursive=True)
    else:
        import shutil

        shutil.rmtree(path)


def abort_unfinished_uploads(root: Path) -> int:
    """Abort the multipart uploads under `root` that killed attempts left behind (they
    are invisible, but the service keeps and bills their parts); how many were aborted."""
    if not is_url(root):
        return 0
    bucket, _, prefix = root.path.partition("/")
    uploads = root.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix + "/")
    uploads = uploads.get("Uploads", [])
    for upload in uploads:
        root.fs.call_s3(
            "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    return len(uploads)


def write_frame(frame, path: Path) -> None:
    """`frame.to_parquet(path)`, locally or as one object (written whole on close)."""
    if not is_url(path):
        frame.to_parquet(path, index=False)
        return
    with path.open("wb") as handle:
        frame.to_parquet(handle, index=False)


@contextlib.contextmanager
def parquet_writer(path: Path, schema: pa.Schema):
    """A `pq.ParquetWriter` for a local file, or for one object written whole on close."""
    if not is_url(path):
        with pq.ParquetWriter(path, schema) as writer:
            yield writer
        return
    with path.open("wb") as handle, pq.ParquetWriter(handle, schema) as writer:
        yield writer
