"""The feature dashboard at the scale it is for: 16,384 latents (issue 10).

A synthetic `sae_stats` output of 16k latents (10 top examples and 20 samples per latent,
17-token contexts, 20 output tokens each: the default job's shape) is written as a site
by `write_report`, then opened in headless Chromium (tests/browser.py) in interleaved
rounds:
  assets only   a page with the same scripts and styles and no content: the fixed cost
                of the library (BokehJS) that every page pays
  summary       index.html, until its two charts are drawn
  latent page   one latent's page, until its chart and its contexts are drawn
Reported: seconds to write the site, its size, and median load times with their ratio to
the assets-only page. Target: the summary page loads in under a second.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.timing import markdown_table
from pipeline.report import write_report
from pipeline.report.site import page, write_page
from pipeline.stats.features import ACTIVATION_BIN_EDGES, NUM_BINS

NUM_LATENTS = 16_384
TOP, SAMPLES, CONTEXT = 10, 20, 8
WORDS = ("the", " model", " learns", " a", " feature", " for", " every", " token", ",", ".")


def synthetic_stats(out: Path, num_latents: int = NUM_LATENTS, seed: int = 0) -> Path:
    """features.parquet, examples.parquet, logits.parquet and stats.json of the job's shape."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    num_tokens = 10**9
    frequency = 10 ** rng.uniform(-6, -1, num_latents)
    histogram = rng.integers(0, 1000, (num_latents, NUM_BINS)) * (rng.random((1, NUM_BINS)) < 0.3)
    pd.DataFrame(
        {
            "latent": np.arange(num_latents),
            "num_fired": (frequency * num_tokens).astype(np.int64),
            "frequency": frequency,
            "mean_active": rng.uniform(0.5, 2, num_latents),
            "std_active": rng.uniform(0.1, 1, num_latents),
            "max": rng.uniform(2, 10, num_latents),
            "histogram": list(histogram),
        }
    ).to_parquet(out / "features.parquet", index=False)
    per_latent = TOP + SAMPLES
    width = 2 * CONTEXT + 1
    rows = num_latents * per_latent
    tokens = [[WORDS[(i + j) % len(WORDS)] for j in range(width)] for i in range(97)]
    pd.DataFrame(
        {
            "latent": np.repeat(np.arange(num_latents), per_latent),
            "kind": np.tile(["top"] * TOP + ["sample"] * SAMPLES, num_latents),
            "rank": np.tile(np.r_[np.arange(TOP), np.arange(SAMPLES)], num_latents),
            "activation": rng.uniform(0, 10, rows),
            "row": rng.integers(0, num_tokens, rows),
            "doc_id": rng.integers(0, 10**6, rows),
            "position": rng.integers(0, 1024, rows),
            "token": "Ġtoken",
            "token_text": " token",
            "context": "the model [[ token]] here",
            "context_tokens": [tokens[i % 97] for i in range(rows)],
            "context_activations": list(rng.uniform(0, 10, (rows, width)).astype(np.float32)),
            "context_index": np.full(rows, CONTEXT, dtype=np.int32),
        }
    ).to_parquet(out / "examples.parquet", index=False, row_group_size=20_000)
    pd.DataFrame(
        {
            "latent": np.repeat(np.arange(num_latents), 20),
            "direction": np.tile(["promoted"] * 10 + ["suppressed"] * 10, num_latents),
            "rank": np.tile(np.r_[np.arange(10), np.arange(10)], num_latents),
            "token_id": rng.integers(0, 50_000, num_latents * 20),
            "logit": rng.normal(0, 1, num_latents * 20),
            "token": "Ġword",
            "token_text": " word",
        }
    ).to_parquet(out / "logits.parquet", index=False)
    stats = {
        "store": "synthetic", "hook": "blocks.6.hook_resid_post", "sae": "synthetic",
        "model": "synthetic", "num_tokens": num_tokens, "num_latents": num_latents,
        "top_k": TOP, "samples": SAMPLES, "context": CONTEXT, "deduplicated": True,
        "dead_count": 0, "dense_frequency": 0.1, "dense_count": 0,
        "l0_histogram": rng.integers(0, 10**6, 80).tolist(),
        "activation_bin_edges": ACTIVATION_BIN_EDGES.tolist(),
        "output_tokens": "W_dec @ W_U (synthetic)", "sae_trained_on": {},
    }  # fmt: skip
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def load_seconds(browser, path: Path, ready: str) -> float:
    started = time.perf_counter()
    opened = browser.open(path, wait_for=ready)
    seconds = time.perf_counter() - started
    if opened.errors:
        raise RuntimeError(f"{path}: {opened.errors}")
    opened.close()
    return seconds


def run(rounds: int = 5, threads: int | None = None, device: str = "cpu") -> str:
    from tests.browser import Browser, find_chromium

    root = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        stats = synthetic_stats(root / "stats")
        started = time.perf_counter()
        _, index = write_report(stats, root / "site")
        write_seconds = time.perf_counter() - started
        site = root / "site"
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        write_page(site, "empty.html", page("empty", "", {}, depth=0))
        lines = [
            f"{NUM_LATENTS:,} latents: site written in {write_seconds:.1f} s "
            f"({write_seconds / NUM_LATENTS * 1000:.2f} ms per latent), "
            f"{size / 2**20:.0f} MiB ({size / NUM_LATENTS / 1024:.1f} KiB per latent)"
        ]
        if find_chromium() is None:
            return "\n".join([*lines, "no Chromium here: page loads not measured"])
        cases = {
            "assets only": (site / "empty.html", "document.readyState === 'complete'"),
            "summary page": (index, "document.querySelectorAll('.chart-drawn').length >= 2"),
            "latent page": (
                site / "latents" / "12345.html",
                "document.querySelectorAll('.chart-drawn').length >= 1 && "
                "document.querySelectorAll('.context').length >= 30",
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        with Browser() as browser:
            load_seconds(browser, *cases["summary page"])  # warm the browser's disk cache
            for _ in range(rounds):
                for name, (path, ready) in cases.items():
                    times[name].append(load_seconds(browser, path, ready))
        base = statistics.median(times["assets only"])
        table = [
            [name, f"{statistics.median(t) * 1000:.0f}", f"{statistics.median(t) / base:.2f}"]
            for name, t in times.items()
        ]
        header = ["page (until drawn)", "median ms", "x assets-only page"]
        return "\n".join([*lines, "", markdown_table(header, table)])
    finally:
        shutil.rmtree(root, ignore_errors=True)
