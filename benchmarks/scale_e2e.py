"""Corpus scale end to end (issue 8): a 20M-token capture on local Ray whose driver is
SIGKILLed while planning and again while capturing, rerun each time, against an
uninterrupted run: the stores must be byte-identical.

Each run is `python -m jobs.capture` in its own process session, starting its own local
Ray cluster under its own RAY_TMPDIR, so a kill takes the whole cluster down, as losing
the head node would: the daemons that outlive the driver are found by that folder in their
command lines and killed too. No other Ray process of the machine is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpora import pydoc_jsonl
from benchmarks.models import tiny_gpt2_folder


def capture_args(model: Path, corpus: Path, out: Path) -> list[str]:
    sets = {
        "model": str(model),
        "hooks": "[layer_1]",
        "dtype": "float16",
        "context_length": 128,
        "batch_size": 16,
        "ray.num_workers": 2,
        "ray.num_cpus_per_worker": 0.5,
        "torch_threads": 1,
        "corpus.kind": "jsonl",
        "corpus.path": str(corpus),
        "corpus.shard_bytes": 4 * 2**20,
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "jobs.capture", "--quiet", *args, "--out", str(out)]


def run_capture(args: list[str], kill_when=None) -> float:
    """Run a capture; with `kill_when`, SIGKILL its process group once that holds."""
    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_TMPDIR": ray_tmp,
    }
    env.pop("RAY_ADDRESS", None)
    began = time.perf_counter()
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    if kill_when is None:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"capture failed:\n{err.decode()[-3000:]}")
        return time.perf_counter() - began
    while not kill_when():
        if process.poll() is not None:
            raise RuntimeError("the capture ended before it could be killed")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _kill_cluster(ray_tmp)
    return time.perf_counter() - began


def _kill_cluster(ray_tmp: str) -> None:
    """SIGKILL every process of the Ray cluster that lives under `ray_tmp`."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if any(ray_tmp in part for part in process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                process.kill()


def digests(root: Path) -> dict[str, str]:
    """sha256 of every data file: parts, docs, plan records, Zarr shards (not unit records,
    which hold timings and pids)."""
    files = [
        *sorted((root / "tokens").glob("*.parquet")),
        *sorted((root / "docs").glob("*.parquet")),
        *sorted((root / "plan").glob("*.json")),
        *sorted(p for p in (root / "activations.zarr").rglob("c/*/*") if p.is_file()),
    ]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run(
    rounds: int = 1, threads: int | None = None, device: str = "cpu", num_tokens: int = 20_000_000
) -> str:
    from pipeline.store.reader import ActivationStore

    lines = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        model = tiny_gpt2_folder(work / "tiny")
        corpus = pydoc_jsonl(work / "corpus.jsonl", num_tokens)
        clean, killed = work / "clean", work / "killed"
        seconds = run_capture(capture_args(model, corpus, clean))
        store = ActivationStore.open(clean)
        store.verify()
        lines.append(f"clean run: {store.num_rows} rows, {store.num_units} units, {seconds:.0f} s")
        args = capture_args(model, corpus, killed)
        parts = lambda: list((killed / "plan").glob("part-*.json"))  # noqa: E731
        run_capture(args, kill_when=lambda: len(parts()) >= 2)
        planned = len(parts())
        assert not (killed / "store.json").exists(), "the kill must land while planning"
        units = lambda: list((killed / "units").glob("unit-*.json"))  # noqa: E731
        run_capture(args, kill_when=lambda: len(units()) >= store.num_units // 3)
        committed = len(units())
        seconds = run_capture(args)
        resumed = ActivationStore.open(killed)
        resumed.verify()
        lines.append(
            f"killed while planning after {planned} of {len(list((clean / 'plan').glob('part-*')))}"
            f" parts, killed while capturing after {committed} of {store.num_units} units, "
            f"final rerun {seconds:.0f} s; verify() passed"
        )
        same = digests(clean) == digests(killed)
        lines.append(f"{len(digests(clean))} data files compared: byte-identical = {same}")
        if not same:
            raise AssertionError("the resumed store differs from the clean one")
    return "\n".join(lines)
