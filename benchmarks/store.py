"""Measure Zarr shard writes against a plain `write()` of the same bytes, with and without
what a commit adds (fsync and a checksum).

`python -m jobs.benchmark store --rounds 3`, or from the repository root
`python -m benchmarks.store [--rows 4096] [--d 768] [--units 8] [--repeats 3]`

The issue's target: writing a unit's activations to Zarr reaches at least 50% of the
throughput of writing the same bytes to a plain file with one write(). Each sample writes
one unit's [rows, d] float32 block, alternating the methods so page-cache and disk state
affect them alike; a ratio is its baseline's seconds / the method's seconds over all
samples.

Two baselines, so both sides of every ratio do the same work:
  plain write          one `write()`, no fsync, no checksum; the baseline of the shard
                       writes without fsync (how fast the bytes reach the page cache)
  plain commit write   `write_atomic(fsync=True)` (temp file, fsync, rename) and the sha256
                       of the bytes; the baseline of the shard write that does the same,
                       which is what `StoreWriter.write_unit` does per hook (it hashes in a
                       second thread, overlapping the write; here both run in one thread,
                       on both sides alike)
Only the commit rows are what a capture pays per shard; the others isolate the layout.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from benchmarks.timing import markdown_table
from pipeline.store.atomic import write_atomic
from pipeline.store.shards import inner_chunk_rows, write_shard

# method -> (label, its baseline); a baseline's own row has itself as baseline.
BASELINES = {"plain_write": "plain write", "plain_commit": "plain commit write"}
METHODS = {
    "plain_write": ("plain write(), no fsync, no checksum", "plain_write"),
    "zarr_direct_shard": ("our direct shard write, no fsync, no checksum", "plain_write"),
    "zarr_setitem": ("zarr's own arr[a:b] = x, no fsync, no checksum", "plain_write"),
    "plain_commit": ("plain write + fsync + sha256 (temp file, rename)", "plain_commit"),
    "zarr_direct_shard_commit": (
        "our direct shard write + fsync + sha256 (a capture's work per shard)",
        "plain_commit",
    ),
}


def measure_write_ratio(
    rows: int = 4096, d: int = 768, units: int = 8, repeats: int = 3
) -> dict[str, float]:
    """Seconds per unit for each method, and throughput relative to its baseline.

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
    for name, (_, base) in METHODS.items():
        if name != base:
            result[f"{name}_vs_{base}"] = seconds[base] / seconds[name]
            result[f"{name}_vs_{base}_rewrite"] = rewrite[base] / rewrite[name]
    result["plain_commit_vs_plain_write"] = seconds["plain_write"] / seconds["plain_commit"]
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
    committed = group.create_array("committed", **kwargs)
    api = group.create_array("api", **kwargs).with_config({"write_empty_chunks": True})

    def shard_path(name: str, array, u: int) -> Path:
        return root / "bench.zarr" / name / array.metadata.encode_chunk_key((u, 0))

    def plain_write(u: int) -> None:
        with open(root / f"plain-{u}.bin", "wb") as f:
            f.write(data_RD.data)

    def zarr_direct_shard(u: int) -> None:
        path = shard_path("direct", direct, u)
        write_shard(path, data_RD, shard_rows=rows, chunk_rows=chunk_rows, fsync=False)

    def zarr_setitem(u: int) -> None:
        api[u * rows : (u + 1) * rows] = data_RD

    def plain_commit(u: int) -> None:
        write_atomic(root / f"commit-{u}.bin", [data_RD.data], fsync=True)
        hashlib.sha256(data_RD.data).hexdigest()

    def zarr_direct_shard_commit(u: int) -> None:
        path = shard_path("committed", committed, u)
        write_shard(path, data_RD, shard_rows=rows, chunk_rows=chunk_rows, fsync=True)
        hashlib.sha256(data_RD.data).hexdigest()

    methods = {
        "plain_write": plain_write,
        "zarr_direct_shard": zarr_direct_shard,
        "zarr_setitem": zarr_setitem,
        "plain_commit": plain_commit,
        "zarr_direct_shard_commit": zarr_direct_shard_commit,
    }
    assert methods.keys() == METHODS.keys()
    return methods


def table(result: dict[str, float]) -> str:
    rows = []
    for name, (label, base) in METHODS.items():
        fresh = 1.0 if name == base else result[f"{name}_vs_{base}"]
        again = 1.0 if name == base else result[f"{name}_vs_{base}_rewrite"]
        mib_s = result["unit_mib"] / result[f"{name}_s"]
        rows.append([label, f"{mib_s:,.0f}", BASELINES[base], fresh, again])
    header = ["write", "MiB/s (fresh)", "baseline", "vs baseline, fresh", "vs baseline, rewrite"]
    return (
        markdown_table(header, rows)
        + f"\n\nunits of {result['unit_mib']:.0f} MiB float32, inner chunks of "
        f"{result['chunk_rows']} rows; durability (fsync + sha256) keeps "
        f"{result['plain_commit_vs_plain_write']:.2f} of a plain write's throughput"
    )


def run(rounds: int = 3, threads: int | None = None, device: str = "cpu", units: int = 8) -> str:
    """The `python -m jobs.benchmark store` entry point: `rounds` repeats of `units` units."""
    return table(measure_write_ratio(units=units, repeats=rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(table(measure_write_ratio(args.rows, args.d, args.units, args.repeats)))


if __name__ == "__main__":
    main()
