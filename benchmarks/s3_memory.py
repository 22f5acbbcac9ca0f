"""Writer memory on object storage: what a capture to S3 holds, against the same capture
to local disk (issue 11).

Each capture runs in a fresh subprocess that reports its own peak RSS (ru_maxrss), one
process, MiniLM with three hooks in float32, on the pydoc topics as JSONL. Two
measurements per store, each free of the fixed cost of the model and the libraries
(botocore's service models alone are tens of MiB):

- units held: captures with 16,384-row and 65,536-row units (72 and 288 MiB of
  activations a unit); (peak RSS difference) / (unit size difference) is how many units'
  worth of bytes the process holds at its peak. Target: S3 at most two.
- bytes per token: captures of the corpus once and `copies` times with 16,384-row units;
  (peak RSS difference) / (token difference) is what a larger corpus adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.corpora import repeated_pydoc_jsonl
from benchmarks.timing import markdown_table

HOOKS = ("layer_1", "layer_3", "layer_5")
SMALL_UNIT, LARGE_UNIT = 16_384, 65_536
WIDTH = 384  # MiniLM's hidden size

_CHILD = """
import json, resource, sys, time
from pipeline.capture import CaptureConfig, capture
from pipeline.store.corpus import CorpusConfig
corpus, out, hooks, rows = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(",")), int(sys.argv[4])
began = time.perf_counter()
result = capture(CaptureConfig(hooks=hooks, dtype="float32", corpus=CorpusConfig(kind="jsonl", path=corpus),
                               rows_per_unit=rows, out=out, torch_threads=2), progress=False)
print(json.dumps({"rows": result.num_rows, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - began}))
"""


def unit_mib(rows: int) -> float:
    return rows * WIDTH * 4 * len(HOOKS) / 2**20


def peak_rss(corpus: Path, out: str, rows_per_unit: int) -> dict:
    args = [str(corpus), out, ",".join(HOOKS), str(rows_per_unit)]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=os.environ
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = 1, threads: int | None = None, device: str = "cpu", copies: int = 4) -> str:
    from tests.s3_server import S3Server

    cases = [(1, SMALL_UNIT), (1, LARGE_UNIT), (copies, SMALL_UNIT)]
    stores = ("local disk", "S3 (loopback)")
    results: dict[tuple[str, int, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp, S3Server() as server:
        os.environ.update(server.env)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")
        work = Path(tmp)
        corpora = {n: repeated_pydoc_jsonl(work / f"corpus-{n}.jsonl", n) for n in (1, copies)}
        for n, unit in cases:  # interleaved: disk then S3 for each case
            for store in stores:
                name = f"store-{n}-{unit}"
                out = str(work / name) if store == "local disk" else f"s3://bench/{name}"
                results[store, n, unit] = peak_rss(corpora[n], out, unit)
    rows = []
    for store in stores:
        small, large = results[store, 1, SMALL_UNIT], results[store, 1, LARGE_UNIT]
        big = results[store, copies, SMALL_UNIT]
        held = (large["peak_rss_mib"] - small["peak_rss_mib"]) / (
            unit_mib(LARGE_UNIT) - unit_mib(SMALL_UNIT)
        )
        grown = (big["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20
        rows.append(
            [
                store,
                f"{small['peak_rss_mib']:.0f} / {large['peak_rss_mib']:.0f}",
                f"{held:.2f}",
                f"{small['peak_rss_mib']:.0f} / {big['peak_rss_mib']:.0f}",
                f"{grown / (big['rows'] - small['rows']):.1f}",
                f"{small['seconds']:.0f} / {large['seconds']:.0f} / {big['seconds']:.0f}",
            ]
        )
    header = (
        f"MiniLM, hooks {', '.join(HOOKS)} float32, one process; units of {SMALL_UNIT:,} and "
        f"{LARGE_UNIT:,} rows ({unit_mib(SMALL_UNIT):.0f} and {unit_mib(LARGE_UNIT):.0f} MiB); "
        f"pydoc x1 ({small['rows']:,} tokens) and x{copies} ({big['rows']:,})"
    )
    columns = [
        "store", "peak RSS MiB, small / large units", "units held",
        f"peak RSS MiB, x1 / x{copies}", "bytes/token", "seconds (small / large / x4)",
    ]  # fmt: skip
    return header + "\n\n" + markdown_table(columns, rows)
