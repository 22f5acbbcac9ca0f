"""Direct shard writes equal zarr's own bytes; bfloat16 bits convert exactly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import zarr

from pipeline.store.dtypes import bfloat16_bits_to_float32, float32_to_bfloat16_bits, stored_dtype
from pipeline.store.shards import crc32c, direct_write_supported, inner_chunk_rows, write_shard


def test_float32_to_bfloat16_bits_matches_torch_rounding():
    values = np.concatenate(
        [
            np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 100,
            np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, 3.4e38, 1.00390625], np.float32),
        ]
    )
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.uint16).numpy()
    np.testing.assert_array_equal(float32_to_bfloat16_bits(values), expected)


def test_nan_stays_nan_in_bfloat16():
    bits = float32_to_bfloat16_bits(np.array([np.nan], np.float32))
    assert np.isnan(bfloat16_bits_to_float32(bits)).all()


def test_bfloat16_widening_is_exact():
    bits = np.arange(0, 2**16, dtype=np.uint16)
    widened = bfloat16_bits_to_float32(bits)
    expected = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(widened.view(np.uint32), expected.view(np.uint32))


def test_unknown_dtype_is_rejected():
    with pytest.raises(
        ValueError, match=r"dtype must be one of \['float32', 'float16', 'bfloat16'\]"
    ):
        stored_dtype("int8")


def test_crc32c_python_fallback_matches_the_c_implementation(monkeypatch):
    data = bytes(range(256)) * 3
    fast = crc32c(data)
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    assert crc32c(data) == fast
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_inner_chunks_divide_the_shard_and_stay_near_one_mib():
    assert inner_chunk_rows(4096, 768 * 4) == 256
    assert inner_chunk_rows(4096, 32) == 4096
    assert inner_chunk_rows(1000, 3000) == 250
    assert inner_chunk_rows(7, 2**21) == 1


@pytest.mark.parametrize("num_rows", [40, 37, 3])  # full shards; last shard partial
def test_direct_shard_bytes_equal_zarrs_own(tmp_path, num_rows):
    d, shard_rows, chunk_rows = 6, 16, 4
    data = np.random.default_rng(1).standard_normal((num_rows, d)).astype(np.float32)
    arrays = {}
    for name in ("ours", "zarr"):
        group = zarr.open_group(tmp_path / f"{name}.zarr", mode="w", zarr_format=3)
        arrays[name] = group.create_array(
            "h",
            shape=(num_rows, d),
            dtype="float32",
            shards=(shard_rows, d),
            chunks=(chunk_rows, d),
            compressors=None,
            fill_value=0,
        )
    assert direct_write_supported(arrays["ours"])
    arrays["zarr"].with_config({"write_empty_chunks": True})[:] = data
    for shard in range(-(-num_rows // shard_rows)):
        rows = data[shard * shard_rows : (shard + 1) * shard_rows]
        key = arrays["ours"].metadata.encode_chunk_key((shard, 0))
        write_shard(
            tmp_path / "ours.zarr" / "h" / key,
            np.ascontiguousarray(rows),
            shard_rows=shard_rows,
            chunk_rows=chunk_rows,
            fsync=False,
        )
        ours = (tmp_path / "ours.zarr" / "h" / key).read_bytes()
        assert ours == (tmp_path / "zarr.zarr" / "h" / key).read_bytes()
    np.testing.assert_array_equal(arrays["ours"][:], data)


def test_direct_write_is_refused_for_other_layouts(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3)
    compressed = group.create_array(
        "c", shape=(8, 4), dtype="float32", shards=(4, 4), chunks=(2, 4)
    )
    assert not direct_write_supported(compressed)


def test_write_shard_leaves_no_temp_file_when_the_write_fails(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    path = tmp_path / "c" / "0" / "0"
    with pytest.raises(OSError, match="No space"):
        write_shard(path, np.ones((4, 2), np.float32), shard_rows=4, chunk_rows=4, fsync=False)
    assert list(path.parent.iterdir()) == []
