"""Our capture, run like the alternatives: one process, one spec, one JSON line.

Runs in the project's own environment (`.venv`). Layer N is `layer_N`, the output of
block N (`transformer.h.N`), the residual stream after that block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _common import Clock, read_spec, report, save_samples

from pipeline.capture import CaptureConfig, capture
from pipeline.store.corpus import CorpusConfig
from pipeline.store.reader import ActivationStore


def main() -> None:
    spec = read_spec()
    hooks = tuple(f"layer_{n}" for n in spec["layers"])
    config = CaptureConfig(
        model=spec["model"],
        hooks=hooks,
        dtype=spec["dtype"],
        corpus=CorpusConfig(kind="jsonl", path=spec["corpus"]),
        context_length=spec["context"],
        batch_size=spec["batch"],
        max_tokens=spec["tokens"],
        out=spec["out"],
        overwrite=True,
        torch_threads=spec["threads"],
    )
    with Clock() as clock:
        result = capture(config, progress=False)
    store = ActivationStore.open(result.path)
    tokens = store.tokens().to_pandas()
    samples = []
    last_window = int(tokens["window"].max())
    for window in (0, 1, last_window):
        rows = tokens[tokens["window"] == window].sort_values("position")
        index = rows["row"].to_numpy()
        values = {}
        for n, hook in zip(spec["layers"], store.hooks, strict=True):
            values[n] = torch.from_numpy(np.asarray(store.read(hook, index), dtype=np.float32))
        ids = rows["token_id"].to_numpy()
        samples.append({"ids": ids, "mask": np.ones(len(ids), bool), "values": values})
    report(
        tool="ours",
        tokens=int(result.num_rows),
        stored_rows=int(result.num_rows),
        seconds=clock.seconds,
        out=str(result.path),
        hook_names=list(store.hooks),
        samples=save_samples(Path(spec["work"]) / "samples-ours.npz", samples),
    )


if __name__ == "__main__":
    main()
