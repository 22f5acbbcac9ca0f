"""Peak memory is bounded by the unit size, not the corpus (issue 3).

Captures a corpus and the same corpus repeated 8 times (the pydoc topics as JSONL), each
in a fresh subprocess, and compares the peak RSS the subprocess reports for itself.
Target: the 8x corpus raises peak RSS by less than 15%.

The ratio alone hides what grows: a fixed base (the model, torch, the runtime) dilutes any
per-token cost. So the slope is reported too, bytes of peak RSS per corpus token between
the two sizes, (rss_big - rss_small) / (tokens_big - tokens_small): what each further
token of corpus adds, however large the base.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.corpora import repeated_pydoc_jsonl
from benchmarks.timing import markdown_table

_CHILD = """
import json, resource, sys, time
from pipeline.capture import CaptureConfig, capture
from pipeline.store.corpus import CorpusConfig
corpus, out = sys.argv[1], sys.argv[2]
began = time.perf_counter()
result = capture(CaptureConfig(hooks=("layer_1",), dtype="float16", corpus=CorpusConfig(kind="jsonl", path=corpus),
                               rows_per_unit=4096, out=out, torch_threads=2), progress=False)
print(json.dumps({"rows": result.num_rows, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - began}))
"""


def peak_rss(corpus: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = 1, threads: int | None = None, device: str = "cpu", copies: int = 8) -> str:
    """Peak RSS of the corpus once and `copies` times (8 in the figures; fewer for a quick
    check)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {}
        for n in (1, copies):
            corpus = repeated_pydoc_jsonl(work / f"corpus-{n}.jsonl", n)
            results[n] = peak_rss(corpus, work / f"store-{n}")
            rows.append(
                [
                    f"pydoc x{n}",
                    results[n]["rows"],
                    results[n]["peak_rss_mib"],
                    results[n]["seconds"],
                ]
            )
    small, big = results[1], results[copies]
    growth = big["peak_rss_mib"] / small["peak_rss_mib"] - 1
    slope = (big["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20 / (big["rows"] - small["rows"])
    table = markdown_table(["corpus", "tokens", "peak RSS MiB", "seconds"], rows)
    return (
        f"{table}\n\npeak RSS growth for {copies}x the corpus: {growth:+.1%}; "
        f"slope: {slope:+.1f} bytes of peak RSS per corpus token "
        "(MiniLM, layer_1, units of 4096 rows)"
    )
