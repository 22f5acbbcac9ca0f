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


def local_output(path: str | os.PathLike, what: str) -> None:
    """Refuse an object-storage URL where only a local folder can be written (for now)."""
    if is_url(path):
        raise ValueError(
            f"{what} {path} is on object storage, where this job cannot write yet (stores on "
            "s3:// are read by every job); write to a local folder and copy it up (for "
            "example `aws s3 cp --recursive`)"
        )


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


def read_parquet_folder(folder: Path) -> pa.Table:
    """Every `*.parquet` file of a folder, in name order, as one table."""
    if not is_url(folder):
        return pads.dataset(folder, format="parquet").to_table()
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".parquet")), key=str)
    tables = []
    for path in files:
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
