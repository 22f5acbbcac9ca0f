"""What every driver shares: read the spec, time the work, dump sample windows, report.

The drivers run in their own virtual environments (`make bench-alternatives`), so this file
imports only the standard library, numpy and torch, which every one of them has.

Legend: T tokens of a window, D model width.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def read_spec() -> dict:
    """The spec the benchmark wrote (`driver.py SPEC.json`); sets torch's threads."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(spec["threads"])
    return spec


def read_texts(corpus: str) -> list[str]:
    with open(corpus) as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


class Clock:
    """Wall time of the `with` block: model loading to the last file written."""

    def __enter__(self) -> Clock:
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.began


def save_samples(path: Path, samples: list[dict]) -> str:
    """Write sample windows: token ids [T], a real-token mask [T] and the stored values
    [T, D] per layer index, widened to float32 (exactly)."""
    arrays = {}
    for i, sample in enumerate(samples):
        arrays[f"ids_{i}"] = np.asarray(sample["ids"], dtype=np.int64)
        arrays[f"mask_{i}"] = np.asarray(sample["mask"], dtype=bool)
        for layer, values_TD in sample["values"].items():
            arrays[f"values_{i}_{layer}"] = values_TD.float().numpy()
    np.savez(path, **arrays)
    return str(path)


def report(**fields) -> None:
    """Print the driver's result as one JSON line (the benchmark reads the last line)."""
    fields["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fields["pid"] = os.getpid()
    print(json.dumps(fields), flush=True)
