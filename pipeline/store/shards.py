"""Write one whole Zarr v3 shard as a single file write.

Why not ``array[start:stop] = data``: zarr 3.1 treats every write to a sharded array as a
partial shard update. It reads the existing shard back (a full read on every rerun),
re-encodes each inner chunk, concatenates them and writes the result: three extra passes
over the bytes, plus, by default, a full scan comparing the data with the fill value. We
measured it at 20-50% of a plain ``write()`` of the same bytes.

Our arrays are laid out so a shard is trivial to encode: the shard is [R, d] rows, inner
chunks are [r, d] (full width), inner codecs are just little-endian bytes, the index
(offset, nbytes as uint64 per inner chunk, then a crc32c) sits at the end. So the shard
file is the unit's C-order bytes, zero padding up to a whole inner chunk in the last unit,
and the index. We write exactly what zarr writes (tests compare the bytes) via a hidden
temp file and a rename, so readers see the old shard or the new one, never a mix.
``direct_write_supported`` checks the array's metadata is that layout; if zarr ever
changes it, the writer falls back to zarr's own path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.store.atomic import write_atomic

_EMPTY = np.uint64(2**64 - 1)
TARGET_CHUNK_BYTES = 1 << 20


def inner_chunk_rows(shard_rows: int, row_bytes: int, target: int = TARGET_CHUNK_BYTES) -> int:
    """The largest divisor of shard_rows whose chunk stays within `target` bytes (>= 1 row).

    Inner chunks are the read granularity: reading one row decodes one inner chunk.
    """
    best = 1
    for rows in range(1, shard_rows + 1):
        if shard_rows % rows == 0 and rows * row_bytes <= target:
            best = rows
    return best


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum zarr puts after a shard index."""
    try:
        import google_crc32c  # zarr's own dependency; C speed

        return int(google_crc32c.value(data))
    except ImportError:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def shard_index(num_chunks: int, num_filled: int, chunk_nbytes: int) -> bytes:
    """Index of a shard whose first `num_filled` inner chunks are stored back to back."""
    index = np.full((num_chunks, 1, 2), _EMPTY, dtype="<u8")
    index[:num_filled, 0, 0] = np.arange(num_filled, dtype=np.uint64) * np.uint64(chunk_nbytes)
    index[:num_filled, 0, 1] = chunk_nbytes
    raw = index.tobytes()
    return raw + np.uint32(crc32c(raw)).astype("<u4").tobytes()


def direct_write_supported(array) -> bool:
    """True when the zarr array has exactly the shard layout write_shard produces."""
    meta = array.metadata
    if getattr(meta, "zarr_format", None) != 3 or len(meta.shape) != 2 or sys.byteorder != "little":
        return False
    codecs = json.loads(json.dumps([codec.to_dict() for codec in meta.codecs], default=str))
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return False
    conf = codecs[0]["configuration"]
    shard_rows, width = meta.chunk_grid.chunk_shape
    chunk_rows, chunk_width = conf["chunk_shape"]
    little = {"name": "bytes", "configuration": {"endian": "little"}}
    return (
        width == meta.shape[1] == chunk_width
        and shard_rows % chunk_rows == 0
        and conf["codecs"] == [little]
        and conf["index_codecs"] == [little, {"name": "crc32c"}]
        and conf["index_location"] == "end"
        and float(meta.fill_value) == 0
        and meta.encode_chunk_key((0, 0)) == "c/0/0"
    )


def write_shard(
    path: Path, data_RD: np.ndarray, *, shard_rows: int, chunk_rows: int, fsync: bool
) -> None:
    """Write rows data_RD (<= shard_rows of them) as the shard file at `path`, atomically."""
    num_rows = data_RD.shape[0]
    assert 0 < num_rows <= shard_rows and data_RD.flags.c_contiguous
    row_bytes = data_RD.shape[1] * data_RD.dtype.itemsize
    num_filled = -(-num_rows // chunk_rows)
    pad = bytes((num_filled * chunk_rows - num_rows) * row_bytes)
    index = shard_index(shard_rows // chunk_rows, num_filled, chunk_rows * row_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, [data_RD.reshape(-1).view(np.uint8).data, pad, index], fsync=fsync)
