"""Corpus scale (issue 8): memory and time against corpus size, planning throughput, and
the whole capture call against a bare forward that tokenizes the same tokens.

Corpora are the pydoc topics repeated as JSONL (about 124k MiniLM tokens per copy), so a
larger corpus is more of the same text and only size changes. Captures whose memory is
measured run in fresh subprocesses, each reporting its own peak RSS (VmHWM, which unlike
ru_maxrss does not inherit the parent's); actors report theirs in each unit's commit
record (`timing.peak_rss_mb`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from benchmarks.corpora import pydoc_jsonl
from benchmarks.models import gpt2_small_folder, tiny_gpt2_folder
from benchmarks.timing import interleaved, markdown_table

_CAPTURE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pipeline.capture import capture
    from pipeline.capture.worker import peak_rss_mb
    from pipeline.capture.config_io import config_from_dict
    from pipeline.ray_config import ray_config_from_dict
    from pipeline.store.reader import ActivationStore
    values = json.loads(sys.argv[1])
    ray_config = ray_config_from_dict(values.pop("ray", None))
    config = config_from_dict(values)
    began = time.perf_counter()
    if sys.argv[2] == "ray":
        import ray

        from pipeline.distributed.local_ray import start_local_ray
        from pipeline.distributed import run_capture
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
        result = run_capture(config, ray_config, progress=False)
    else:
        result = capture(config, progress=False)
    wall = time.perf_counter() - began
    store = ActivationStore.open(result.path)
    actors = {}
    for unit in range(store.num_units):
        record = store.unit_record(unit)
        worker = record["attempt"].get("worker", "0")
        actors[worker] = max(actors.get(worker, 0), record["timing"]["peak_rss_mb"])
    print(json.dumps({
        "wall_s": wall,
        "driver_rss_mb": peak_rss_mb(),
        "actor_rss_mb": max(actors.values()),
        "num_rows": result.num_rows,
        "documents_read": store.meta["plan"]["num_documents"],
    }))
    """
)


def run_capture_process(config: dict, mode: str) -> dict:
    """One capture in a fresh process ("local" or "ray"); its wall time and peak RSS."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", _CAPTURE_SCRIPT, json.dumps(config), mode],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"capture failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_rows(workdir: Path, sizes: dict[str, int]) -> list[list]:
    """Peak RSS and wall time of captures over corpora of each size."""
    model = tiny_gpt2_folder(workdir / "tiny")
    rows, results = [], {}
    for label, num_tokens in sizes.items():
        corpus = pydoc_jsonl(workdir / f"corpus-{label}.jsonl", num_tokens)
        base = dict(
            model=str(model),
            hooks=["layer_1"],
            dtype="float16",
            context_length=128,
            batch_size=16,
            corpus={"kind": "jsonl", "path": str(corpus)},
            torch_threads=1,
        )
        cases = {
            "max_tokens=4096, one process": ({"max_tokens": 4096}, "local"),
            "whole corpus, one process": ({}, "local"),
            "whole corpus, Ray, 2 actors": (
                {"ray": {"num_workers": 2, "num_cpus_per_worker": 0.5}},
                "ray",
            ),
        }
        for case, (extra, mode) in cases.items():
            out = workdir / f"store-{label}-{len(results)}"
            got = run_capture_process({**base, **extra, "out": str(out)}, mode)
            results[(label, case)] = got
            if (label, case) == (list(sizes)[-1], "whole corpus, one process"):
                shape = store_shape(out)
            rows.append(
                [
                    label,
                    case,
                    got["num_rows"],
                    got["documents_read"],
                    round(got["wall_s"], 1),
                    round(got["driver_rss_mb"]),
                    round(got["actor_rss_mb"]) if mode == "ray" else "(same process)",
                ]
            )
            subprocess.run(["rm", "-rf", str(out)], check=True)
    small, large = list(sizes)
    ratios = []
    for case in (
        "max_tokens=4096, one process",
        "whole corpus, one process",
        "whole corpus, Ray, 2 actors",
    ):
        a, b = results[(small, case)], results[(large, case)]
        ratios.append(
            [
                case,
                round(b["wall_s"] / a["wall_s"], 2),
                round(b["driver_rss_mb"] / a["driver_rss_mb"], 3),
                round(b["actor_rss_mb"] / a["actor_rss_mb"], 3),
            ]
        )
    return rows, ratios, shape


def store_shape(root: Path) -> dict:
    """Files, metadata bytes, and the time to open the token table and read one unit."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from pipeline.store.reader import ActivationStore

    files = [p for p in root.rglob("*") if p.is_file()]
    token_files = sorted((root / "tokens").glob("*.parquet"))
    footers = sum(pq.ParquetFile(p).metadata.serialized_size for p in token_files)
    began = time.perf_counter()
    table = pads.dataset(root / "tokens", format="parquet")
    num_rows = table.count_rows()
    open_s = time.perf_counter() - began
    began = time.perf_counter()
    store = ActivationStore.open(root)
    middle = store.num_units // 2
    start, stop = store.index.unit_rows(middle)
    store.tokens(slice(start, stop))
    store.read(store.hooks[0], slice(start, stop))
    unit_s = time.perf_counter() - began
    return {
        "rows": num_rows,
        "units": store.num_units,
        "parts": len(token_files),
        "files": len(files),
        "store_json_bytes": (root / "store.json").stat().st_size,
        "parquet_footer_bytes": footers,
        "row_groups": sum(pq.ParquetFile(p).num_row_groups for p in token_files),
        "open_token_table_s": round(open_s, 4),
        "open_store_and_read_one_unit_s": round(unit_s, 4),
    }


def planning_rows(workdir: Path, num_tokens: int, rounds: int) -> list[list]:
    """Planning in one process vs the tokenizer's own batch encoding, and Ray tasks 2 vs 1."""
    import ray
    from transformers import AutoTokenizer

    from pipeline.distributed.local_ray import start_local_ray
    from pipeline.distributed.planning import ray_planner
    from pipeline.model import default_model_path
    from pipeline.store.corpus import Corpus, CorpusConfig
    from pipeline.store.plan import PlanConfig
    from pipeline.store.planner import plan_corpus

    path = pydoc_jsonl(workdir / "plan-corpus.jsonl", num_tokens)
    corpus = Corpus(CorpusConfig(kind="jsonl", path=str(path), shard_bytes=1 << 20))
    model_dir = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = PlanConfig(context_length=128)
    texts = [doc.text for doc in corpus]
    counter = iter(range(10**6))

    def fresh() -> Path:
        return workdir / f"plan-{next(counter)}"

    def batch_encode():
        for lo in range(0, len(texts), 256):
            tokenizer(texts[lo : lo + 256], add_special_tokens=False, verbose=False)

    one_process = interleaved(
        {
            "tokenizer batch encoding": batch_encode,
            "plan_corpus (read, tokenize, lay out, write parts)": lambda: plan_corpus(
                fresh(), corpus, tokenizer, config, fsync=True
            ),
        },
        rounds=rounds,
    )
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = interleaved(
            {
                "Ray, 1 task at a time": lambda: ray_planner(model_dir, max_in_flight=1)(
                    fresh(), corpus, tokenizer, config
                ),
                "Ray, 2 tasks at a time": lambda: ray_planner(model_dir, max_in_flight=2)(
                    fresh(), corpus, tokenizer, config
                ),
            },
            rounds=rounds,
        )
    finally:
        ray.shutdown()
    num = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    rows = []
    for timings, base in (
        (one_process, "tokenizer batch encoding"),
        (on_ray, "Ray, 1 task at a time"),
    ):
        for name, timing in timings.items():
            rows.append(
                [name, round(num / timing.median), round(timings[base].median / timing.median, 3)]
            )
    return rows, num, len(corpus.shards())


def capture_call_rows(workdir: Path, rounds: int, threads: int) -> list[list]:
    """The whole capture call (planning included, model loaded once outside) against
    tokenizing the same documents plus the bare truncated forward on the same batches."""
    from benchmarks.capture import unit_batches
    from pipeline.capture.config import CaptureConfig
    from pipeline.capture.model_setup import deepest_hook, load_model
    from pipeline.capture.prepare import prepare_capture
    from pipeline.capture.worker import UnitWorker, process_units
    from pipeline.store.corpus import CorpusConfig
    from pipeline.store.reader import ActivationStore

    torch.set_num_threads(threads)
    model = gpt2_small_folder(workdir / "gpt2")
    corpus = pydoc_jsonl(workdir / "capture-corpus.jsonl", 5_000_000)
    rows = []
    for label, hooks in (
        ("1 hook", ("layer_6",)),
        ("4 hooks", ("layer_0", "layer_4", "layer_7", "layer_11")),
    ):
        config = CaptureConfig(
            model=str(model),
            hooks=hooks,
            dtype="float16",
            context_length=128,
            max_tokens=2 * 4096,
            batch_size=8,
            corpus=CorpusConfig(kind="jsonl", path=str(corpus)),
            out=str(workdir / f"call-{len(hooks)}"),
            overwrite=True,
            torch_threads=threads,
        )
        lm = load_model(config)
        prepared = prepare_capture(config, lm=lm)
        texts = ActivationStore.open(prepared.out).docs().column("text").to_pylist()
        batches = unit_batches(UnitWorker(config, prepared.out, lm=lm))
        stop = deepest_hook(lm, hooks)

        def whole_call(config=config, lm=lm):
            prepared = prepare_capture(config, lm=lm)
            worker = UnitWorker(config, prepared.out, lm=lm)
            for _ in process_units(worker, prepared.writer.pending_units()):
                pass
            prepared.writer.finalize()

        def bare(lm=lm, texts=texts, batches=batches, stop=stop):
            lm.tokenizer(texts, add_special_tokens=False, verbose=False)
            for ids, mask in batches:
                lm.inference.forward_ids(ids, mask, stop_after=stop)

        timings = interleaved(
            {"tokenize + bare truncated": bare, "capture call": whole_call}, rounds=rounds
        )
        base = timings["tokenize + bare truncated"].median
        for name, timing in timings.items():
            rows.append(
                [label, name, round(2 * 4096 / timing.median), round(base / timing.median, 3)]
            )
    return rows


def run(rounds: int = 3, threads: int | None = None, device: str = "cpu") -> str:
    sizes = {"1M tokens": 1_000_000, "20M tokens": 20_000_000}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        calls = capture_call_rows(workdir, rounds, threads or 2)
        plan_rows, plan_tokens, plan_shards = planning_rows(workdir, 2_000_000, rounds)
        memory, ratios, shape = memory_rows(workdir, sizes)
        elapsed = time.perf_counter() - began
    return "\n\n".join(
        [
            "### The whole capture call vs tokenize + bare truncated forward "
            "(GPT-2-small shape, 2 units of 4096 rows from a 5M-token corpus)",
            markdown_table(["hooks", "case", "tokens/s", "ratio"], calls),
            f"### Planning ({plan_tokens} tokens, {plan_shards} shards of 1 MiB, MiniLM tokenizer)",
            markdown_table(["case", "tokens/s", "ratio to its baseline"], plan_rows),
            "### Memory and time against corpus size (tiny GPT-2, one hook, float16)",
            markdown_table(
                [
                    "corpus",
                    "case",
                    "rows",
                    "documents read",
                    "wall s",
                    "driver peak RSS MiB",
                    "actor peak RSS MiB",
                ],
                memory,
            ),
            markdown_table(
                ["case", "wall 20M / 1M", "driver RSS 20M / 1M", "actor RSS 20M / 1M"], ratios
            ),
            "### The 20M-token store (one hook, 4096-row units, 4 MiB shards)",
            markdown_table(["quantity", "value"], [[k, v] for k, v in shape.items()]),
            f"(whole suite: {elapsed:.0f} s)",
        ]
    )
