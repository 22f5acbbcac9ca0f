"""Peak memory is bounded by the unit size, not the corpus (issue 3).

Captures a corpus and the same corpus repeated 8 times (the pydoc topics as JSONL), each
in a fresh subprocess, and compares the peak RSS the subprocess reports for itself.
Target: the 8x corpus raises peak RSS by less than 15%.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.bench.gpu import repeated_pydoc_jsonl
from pipeline.bench.timing import markdown_table

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


def run(rounds: int = 1, threads: int | None = None, device: str = "cpu") -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {}
        for copies in (1, 8):
            corpus = repeated_pydoc_jsonl(work / f"corpus-{copies}.jsonl", copies)
            results[copies] = peak_rss(corpus, work / f"store-{copies}")
            rows.append(
                [
                    f"pydoc x{copies}",
                    results[copies]["rows"],
                    results[copies]["peak_rss_mib"],
                    results[copies]["seconds"],
                ]
            )
    growth = results[8]["peak_rss_mib"] / results[1]["peak_rss_mib"] - 1
    table = markdown_table(["corpus", "tokens", "peak RSS MiB", "seconds"], rows)
    return f"{table}\n\npeak RSS growth for 8x the corpus: {growth:+.1%} (MiniLM, layer_1, units of 4096 rows)"
