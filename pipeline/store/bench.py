"""Measure Zarr shard writes against a plain `write()` of the same bytes.

`python -m pipeline.store.bench [--rows 4096] [--d 768] [--units 8] [--repeats 3]`

The issue's target: writing a unit's activations to Zarr reaches at least 50% of the
throughput of writing the same bytes to a plain file with one write(). Each sample writes
one unit's [rows, d] float32 block, alternating the methods so page-cache and disk state
affect them alike; the ratio is plain seconds / method seconds over all samples.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from pipeline.store.shards import inner_chunk_rows, write_shard


def measure_write_ratio(
    rows: int = 4096, d: int = 768, units: int = 8, repeats: int = 3
) -> dict[str, float]:
    """Seconds per unit for each method, and throughput relative to a plain write().

    Every repeat writes fresh files (a capture writes each unit once); a last pass rewrites
    the same units (a rerun of committed units) and is reported separately.
    """
    data_RD = np.random.default_rng(0).standard_normal((rows, d), dtype=np.float32)
    chunk_rows = inner_chunk_rows(rows, d * 4)
    seconds: dict[str, float] = {}
    rewrite: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            methods = _methods(Path(tmp) / str(repeat), data_RD, units, chunk_rows)
            for passes, totals in ((1, seconds), (1 if repeat == repeats - 1 else 0, rewrite)):
                for _ in range(passes):
                    for u in range(units):
                        for name, method in methods.items():
                            began = time.perf_counter()
                            method(u)
                            totals[name] = totals.get(name, 0.0) + time.perf_counter() - began
    result: dict[str, float] = {"unit_mib": data_RD.nbytes / 2**20, "chunk_rows": chunk_rows}
    result.update({f"{name}_s": value / (repeats * units) for name, value in seconds.items()})
    for name in ("zarr_direct_shard", "zarr_setitem"):
        result[f"{name}_vs_plain"] = seconds["plain_write"] / seconds[name]
        result[f"{name}_vs_plain_rewrite"] = rewrite["plain_write"] / rewrite[name]
    return result


def _methods(root: Path, data_RD: np.ndarray, units: int, chunk_rows: int) -> dict:
    rows, d = data_RD.shape
    group = zarr.open_group(root / "bench.zarr", mode="w", zarr_format=3)
    kwargs = dict(
        shape=(rows * units, d),
        dtype="float32",
        shards=(rows, d),
        chunks=(chunk_rows, d),
        compressors=None,
        fill_value=0,
    )
    direct = group.create_array("direct", **kwargs)
    api = group.create_array("api", **kwargs).with_config({"write_empty_chunks": True})

    def plain_write(u: int) -> None:
        with open(root / f"plain-{u}.bin", "wb") as f:
            f.write(data_RD.data)

    def zarr_direct_shard(u: int) -> None:
        path = root / "bench.zarr" / "direct" / direct.metadata.encode_chunk_key((u, 0))
        write_shard(path, data_RD, shard_rows=rows, chunk_rows=chunk_rows, fsync=False)

    def zarr_setitem(u: int) -> None:
        api[u * rows : (u + 1) * rows] = data_RD

    return {
        "plain_write": plain_write,
        "zarr_direct_shard": zarr_direct_shard,
        "zarr_setitem": zarr_setitem,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure_write_ratio(args.rows, args.d, args.units, args.repeats)
    for key, value in result.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
