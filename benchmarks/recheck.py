"""What a rerun pays to check what it trusts (issue 9).

A store of the pydoc corpus in small units (64 rows, 2 hooks: 2,090 units, so per-unit
costs dominate) is reopened as a rerun reopens it, three ways, in interleaved rounds:
  open only    `StoreWriter.open` + `pending_units()`: what a rerun did before the checks
  cheap check  `create_or_open` with the default recheck (records parse, files have their
               recorded size: one stat per shard)
  verify       `create_or_open(verify=True)`: every shard read back and hashed
Reported per unit, so the figure scales to a 10^9-row store (15k units of 65,536 rows).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import markdown_table
from pipeline.model.defaults import default_model_path
from pipeline.store.corpus import Corpus, CorpusConfig
from pipeline.store.plan import PlanConfig
from pipeline.store.planner import plan_corpus
from pipeline.store.writer import StoreWriter

HOOKS = {"layer_1": 8, "layer_3": 8}


def build(root: Path) -> tuple[dict, PlanConfig, object]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = PlanConfig(context_length=128, rows_per_unit=64)
    corpus = Corpus(CorpusConfig(kind="pydoc"))
    meta = {"model": "bench"}

    def plan(path: Path):
        return plan_corpus(path, corpus, tokenizer, config, fsync=False)

    writer = StoreWriter.create_or_open(root, meta, HOOKS, "float32", config, plan, fsync=False)
    generator = np.random.default_rng(0)
    for unit in range(writer.num_units):
        start, stop = writer.index.unit_rows(unit)
        arrays = {
            h: generator.standard_normal((stop - start, d), np.float32) for h, d in HOOKS.items()
        }
        writer.write_unit(unit, arrays)
    writer.finalize()
    return meta, config, plan


def run(rounds: int = 5, threads: int | None = None, device: str = "cpu") -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        meta, config, plan = build(root)
        num_units = StoreWriter.open(root, fsync=False).num_units
        cases = {
            "open only (before)": lambda: StoreWriter.open(root, fsync=False).pending_units(),
            "cheap check (default)": lambda: StoreWriter.create_or_open(
                root, meta, HOOKS, "float32", config, plan, fsync=False
            ),
            "verify": lambda: StoreWriter.create_or_open(
                root, meta, HOOKS, "float32", config, plan, fsync=False, verify=True
            ),
        }
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                began = time.perf_counter()
                case()
                seconds[name].append(time.perf_counter() - began)
    base = float(np.median(seconds["open only (before)"]))
    rows = []
    for name, values in seconds.items():
        median = float(np.median(values))
        rows.append(
            [name, round(median, 3), round(1e3 * median / num_units, 3), round(median / base, 1)]
        )
    table = markdown_table(["reopen", "seconds", "ms per unit", "x open only"], rows)
    return f"{table}\n\n{num_units} units of 64 rows, 2 hooks of width 8, median of {rounds} rounds"
