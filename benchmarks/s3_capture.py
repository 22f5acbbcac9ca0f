"""Capture into object storage against capture to local disk (issue 11).

The same single-process capture of the embedded defaults (MiniLM, pydoc corpus, blocks 1,
3 and 5, float16), limited to `TOKENS` tokens, written by the same code path into a fresh
local folder and into a fresh prefix of an S3 server on 127.0.0.1 (moto's standalone
server, tests/s3_server.py), in interleaved rounds after one untimed round of each. The
whole `capture()` call is timed: planning (token and docs files), every unit's shards
and commit records, finalize. Target: S3 at least 0.8x the local disk's tokens/s.

The local side fsyncs every file and renames it into place, as a real capture does; the
S3 side uploads whole objects and creates each commit record with If-None-Match. moto
is a Python server on the same two cores, so it takes CPU from the capture: a service
on other machines would cost the capture less.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.timing import interleaved, markdown_table
from pipeline.capture import CaptureConfig, capture

TOKENS = 40_000


def run(rounds: int = 5, threads: int | None = None, device: str = "cpu") -> str:
    from tests.s3_server import S3Server

    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    counter = itertools.count()
    with S3Server() as server:
        os.environ.update(server.env)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")

        def config(out: str) -> CaptureConfig:
            return CaptureConfig(
                hooks=("layer_1", "layer_3", "layer_5"),
                max_tokens=TOKENS,
                out=out,
                torch_threads=threads or 2,
                device=device,
            )

        def to_disk():
            capture(config(str(work / f"disk-{next(counter)}")), progress=False)

        def to_s3():
            capture(config(f"s3://bench/store-{next(counter)}"), progress=False)

        try:
            timings = interleaved({"local disk": to_disk, "S3 (loopback)": to_s3}, rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    base = timings["local disk"].median
    rows = [
        [name, f"{TOKENS / t.median:,.0f}", round(base / t.median, 3)]
        for name, t in timings.items()
    ]
    header = f"MiniLM defaults, {TOKENS:,} tokens, 3 hooks float16, one process, {rounds} rounds"
    return header + "\n\n" + markdown_table(["store", "tokens/s", "x local disk"], rows)
