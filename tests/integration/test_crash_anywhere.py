"""Kill real capture and intervention processes at random bytes of their writes, then rerun.

`PIPELINE_FAULTS={"kill_at_byte": N, "paths": P}` SIGKILLs a process once it has written N
bytes through `write_atomic` into files whose path contains P (each file's rename counts as
one more byte; see pipeline/faults.py). The bytes a clean run writes under each P are
measured from the clean store's files, and N is drawn with a fixed seed from one of K equal
slices of [1, total], so the cases of one P land in different files: Zarr shards, token and
docs files, part records, unit records, effects files.

Every case checks the same three things: the kill left only hidden temps (every visible file
is complete, byte-equal to the clean run's, and pandas reads `tokens/`), the rerun finishes,
and the result equals a clean run byte for byte (commit-record timing and host fields aside)
and verifies.

Killed jobs are `python -m jobs.capture --no-ray` (or `jobs.intervene`) with their own argv,
in processes forked from a server that imported torch and transformers once (`job_server`);
reruns run in this process from the same `--set` values (`load_config`). So a case costs
about a second instead of two interpreter starts. Ray actors are killed on the in-process
cluster of `ray_cluster`, and the driver replaces them within the same run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import runpy
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from transformers.utils import logging as transformers_logging

from pipeline.capture import capture, load_config
from pipeline.store.reader import ActivationStore
from tests.helpers import pydoc_texts

pytestmark = pytest.mark.slow
# What a job imports, imported once by the job server (see `job_server`).
_PRELOAD = [
    "pipeline.capture.run",
    "pipeline.interventions.run",
    "pipeline.interventions.worker",
    "transformers.models.gpt2.modeling_gpt2",
    __name__,
]

# Per file, the fields that hold when, where and how long, not what: ignored when comparing.
_VOLATILE = {
    # command: the command line that created the store (an in-process capture has none)
    "store.json": ("created_at", "command"),
    "plan/plan.json": ("command",),
    "_SUCCESS": ("finished_at",),
    "units": ("timing", "attempt", "committed_at"),
    "summary.json": ("spec",),  # an intervention's summary names its own output folder
}


# --- the capture ---------------------------------------------------------------------------
def write_corpus(path: Path) -> Path:
    """Ten mid-sized pydoc topics (about 4,500 tokens of the tiny GPT-2): seven corpus shards."""
    texts = [text for text in pydoc_texts() if 800 <= len(text) <= 3000][:10]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def capture_sets(model: Path, corpus: Path) -> list[str]:
    """`--set` values of the capture: 2 float16 hooks, 512-row units, one Zarr shard 64 KiB."""
    return [
        f"model={model}",
        "hooks=[layer_1, layer_3]",
        "dtype=float16",
        "context_length=64",
        "rows_per_unit=512",
        "batch_size=8",
        "torch_threads=1",
        "corpus.kind=jsonl",
        f"corpus.path={corpus}",
        "corpus.shard_bytes=2500",
    ]


def capture_in_process(sets: list[str], out: Path, **overrides):
    """What `python -m jobs.capture --no-ray` runs for these `--set` values, in this process."""
    assert "PIPELINE_FAULTS" not in os.environ
    config = replace(load_config(None, sets)[0], out=str(out), **overrides)
    return capture(config, progress=False)


def _run_module(module: str, argv: list[str], env: dict[str, str], log: str) -> None:
    """In a process forked from the job server: what `python -m module *argv` runs."""
    os.environ.pop("PIPELINE_FAULTS", None)
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # tqdm's lock is a named semaphore that a killed process cannot unlink: no progress bars.
    transformers_logging.disable_progress_bar()
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@pytest.fixture(scope="module")
def job_server():
    """Starts job processes with torch, transformers and the pipeline already imported.

    A fresh interpreter spends 4-10 s (on 2 busy cores) importing them before it writes a
    byte; forking each job from a server that imported them once (multiprocessing's
    forkserver) makes a kill cost about a second. The job itself is the module run as
    `__main__` with its own argv, as `python -m` runs it.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def run_job(
    server, module: str, args: list[str], faults: dict | None, log: Path
) -> tuple[int, str]:
    """Run `python -m module --no-ray --quiet *args` in a forked process; (exit code, log)."""
    env = {"RAY_AUTH_MODE": "disabled", "TRANSFORMERS_VERBOSITY": "error"}
    if faults is not None:
        env["PIPELINE_FAULTS"] = json.dumps(faults)
    argv = ["--no-ray", "--quiet", *args]
    process = server.Process(target=_run_module, args=(module, argv, env, str(log)))
    process.start()
    process.join(timeout=300)
    if process.exitcode is None:
        process.kill()
        process.join()
    return process.exitcode, log.read_text() if log.exists() else ""


def set_args(sets: list[str]) -> list[str]:
    return [arg for value in sets for arg in ("--set", value)]


# --- where to kill -------------------------------------------------------------------------
def counted_bytes(root: Path, paths: str) -> int:
    """Bytes a clean run writes through write_atomic into files under `paths`, plus one per
    rename (Zarr writes its own zarr.json files, which are not counted)."""
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and p.name != "zarr.json" and paths in p.relative_to(root).as_posix()
    ]
    assert files, f"a clean run writes no file under {paths!r}"
    return sum(p.stat().st_size + 1 for p in files)


def draw_byte(total: int, seed: int, slices: int) -> int:
    """A byte in the `seed`-th of `slices` equal slices of [1, total], drawn with that seed."""
    low, high = seed * total // slices + 1, (seed + 1) * total // slices
    return random.Random(seed).randint(low, high)


# --- what a store holds ----------------------------------------------------------------------
def hidden_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*") if p.is_file())


def visible_files(root: Path) -> dict[str, Path]:
    """Every file a reader may open: no path component starts with '.'."""
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def comparable(rel: str, path: Path) -> bytes | dict:
    """The file's bytes, or for files with timestamps its JSON without the volatile fields."""
    key = "units" if rel.startswith("units/") else rel
    data = path.read_bytes()
    if key not in _VOLATILE or not data:  # an empty file has no JSON
        return data
    payload = json.loads(data)
    for field in _VOLATILE[key]:
        payload.pop(field, None)
    return payload


def assert_only_complete_files_visible(root: Path, clean: Path) -> None:
    """After a kill: every visible file is one the clean run also wrote, with its content.

    Zarr's own metadata files are left out: the group's zarr.json is consolidated only by
    finalize(), so before that it differs from the clean run's.
    """
    reference = visible_files(clean)
    for rel, path in visible_files(root).items():
        assert rel in reference, f"{rel} is visible after the kill; a clean run has no such file"
        if path.name != "zarr.json":
            assert comparable(rel, path) == comparable(rel, reference[rel]), (
                f"{rel} is visible after the kill but differs from the clean run's"
            )
    if any((root / "tokens").glob("*.parquet")):
        tokens = pd.read_parquet(root / "tokens")  # readers skip the hidden temps
        assert tokens.equals(pd.read_parquet(clean / "tokens").head(len(tokens)))


def assert_store_equals_clean(root: Path, clean: Path) -> None:
    """Byte for byte (timing and host fields aside), verified, no temp left anywhere."""
    assert hidden_files(root) == [], "temps of the killed run were not removed"
    ours, reference = visible_files(root), visible_files(clean)
    assert sorted(ours) == sorted(reference)
    for rel, path in ours.items():
        assert comparable(rel, path) == comparable(rel, reference[rel]), f"{rel} differs"
    ActivationStore.open(root).verify()
    assert pd.read_parquet(root / "tokens").equals(pd.read_parquet(clean / "tokens"))


def landed(root: Path) -> list[str]:
    """The temps the kill left, as `path (bytes)`: which write it interrupted."""
    return [f"{p.relative_to(root)} ({p.stat().st_size} B)" for p in hidden_files(root)]


@pytest.fixture(scope="module")
def clean(tiny_gpt2_path, tmp_path_factory):
    """The corpus, the capture's `--set` values and a store captured without faults."""
    root = tmp_path_factory.mktemp("crash")
    sets = capture_sets(tiny_gpt2_path, write_corpus(root / "corpus.jsonl"))
    result = capture_in_process(sets, root / "clean")
    assert result.num_units == 9 and len(list((root / "clean" / "tokens").iterdir())) == 7
    return sets, root / "clean"


# --- single process: python -m jobs.capture --no-ray ---------------------------------------
# (paths, seed): kills per kind of write, each seed in its own slice of that kind's bytes.
CAPTURE_KILLS = [
    *(("activations.zarr", seed) for seed in range(4)),
    *(("tokens/", seed) for seed in range(3)),
    *(("units/", seed) for seed in range(3)),
    ("docs/", 0),
    ("plan/", 1),
]
SLICES = {"activations.zarr": 4, "tokens/": 3, "units/": 3, "docs/": 2, "plan/": 2}


@pytest.mark.parametrize(("paths", "seed"), CAPTURE_KILLS)
def test_capture_killed_at_a_random_byte_reruns_to_the_clean_store(
    job_server, clean, tmp_path, paths, seed
):
    sets, clean_store = clean
    total = counted_bytes(clean_store, paths)
    if paths == "units/":  # records hold timings: a few bytes longer or shorter per run
        total -= 32 * len(list((clean_store / "units").iterdir()))
    at_byte = draw_byte(total, seed, SLICES[paths])
    out = tmp_path / "store"
    fault = {"kill_at_byte": at_byte, "paths": paths}
    code, log = run_job(
        job_server, "jobs.capture", [*set_args(sets), "--out", str(out)], fault, tmp_path / "log"
    )
    assert code == -signal.SIGKILL, log[-3000:]
    temps = landed(out)
    print(f"capture killed at byte {at_byte}/{total} of {paths!r}: {temps}")
    # Killed inside a write (or before its rename): its temp is still there, hidden.
    assert any(paths.rstrip("/") in temp for temp in temps), temps
    assert not (out / "_SUCCESS").exists()
    assert_only_complete_files_visible(out, clean_store)

    capture_in_process(sets, out)
    assert_store_equals_clean(out, clean_store)


# --- a Ray actor, on an in-process local cluster -------------------------------------------
RAY_KILLS = [("activations.zarr", 0), ("units/", 1), ("activations.zarr", 2)]


def copy_plan(store: Path, out: Path) -> Path:
    """A planned store with no unit committed, as a driver leaves it once planning is done.

    Planning on Ray starts tokenizing workers for each new PIPELINE_FAULTS value (it is part
    of their runtime environment) and takes half a minute on 2 cores; the kills here are
    in the actors' unit writes, so the runs start from the clean run's plan.
    """
    shutil.copytree(
        store,
        out,
        ignore=lambda folder, names: [
            n for n in names if n == "_SUCCESS" or n == "c" or folder.endswith("units")
        ],
    )
    return out


@pytest.mark.ray
@pytest.mark.parametrize(("paths", "seed"), RAY_KILLS)
def test_ray_actor_killed_at_a_random_byte_is_replaced_and_the_store_equals_a_clean_run(
    ray_cluster, clean, tmp_path, monkeypatch, paths, seed
):
    from pipeline.distributed import run_capture

    sets, clean_store = clean
    # Two actors share the units, so the busier writes at least half of the bytes.
    total = counted_bytes(clean_store, paths) // 2
    if paths == "units/":
        total -= 32 * len(list((clean_store / "units").iterdir()))
    at_byte = draw_byte(total, seed, 3)
    once = tmp_path / "killed-once"
    fault = {"kill_at_byte": at_byte, "paths": paths, "once": str(once)}
    monkeypatch.setenv("PIPELINE_FAULTS", json.dumps(fault))
    ray_sets = [*sets, "ray.num_workers=2", "ray.num_cpus_per_worker=0.5", "ray.max_retries=2"]
    out = copy_plan(clean_store, tmp_path / "ray")
    config, ray_config = load_config(None, ray_sets)
    run_capture(replace(config, out=str(out)), ray_config, progress=False)
    assert once.exists(), "no actor reached the byte to die at"
    print(f"actor killed at byte {at_byte} of {paths!r}: {once.read_text().strip()}")
    monkeypatch.delenv("PIPELINE_FAULTS")
    assert_store_equals_clean(out, clean_store)
    attempts = [json.loads(p.read_text())["attempt"] for p in (out / "units").iterdir()]
    assert sum(a["attempt"] for a in attempts) == 1, "exactly one unit was redone, once"


# --- interventions: python -m jobs.intervene --no-ray --------------------------------------
INTERVENE_KILLS = [("effects/", 0), ("effects/", 1), ("units/", 0), ("units/", 1)]


def write_spec(path: Path, store: Path, out: Path) -> Path:
    path.write_text(
        f"store: {store}\nout: {out}\nmax_units: 4\ntorch_threads: 1\nsteps:\n"
        "  - {name: half, layer: layer_1, scale: 0.5}\n"
        "  - {name: zero, layer: layer_2, ablate: zero, positions: [1]}\n"
    )
    return path


def intervene_in_process(spec: Path):
    from pipeline.interventions import load_spec, run_interventions

    assert "PIPELINE_FAULTS" not in os.environ
    return run_interventions(load_spec(spec), progress=False)


@pytest.fixture(scope="module")
def clean_effects(clean, tmp_path_factory):
    _, store = clean
    root = tmp_path_factory.mktemp("effects")
    intervene_in_process(write_spec(root / "spec.yaml", store, root / "clean"))
    return root / "clean"


@pytest.mark.parametrize(("paths", "seed"), INTERVENE_KILLS)
def test_intervention_killed_at_a_random_byte_reruns_to_the_clean_effects(
    job_server, clean, clean_effects, tmp_path, paths, seed
):
    _, store = clean
    total = counted_bytes(clean_effects, paths)
    if paths == "units/":
        total -= 32 * len(list((clean_effects / "units").iterdir()))
    at_byte = draw_byte(total, seed, 2)
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "spec.yaml", store, out)
    fault = {"kill_at_byte": at_byte, "paths": paths}
    code, log = run_job(
        job_server, "jobs.intervene", ["--spec", str(spec)], fault, tmp_path / "log"
    )
    assert code == -signal.SIGKILL, log[-3000:]
    temps = landed(out)
    print(f"intervene killed at byte {at_byte}/{total} of {paths!r}: {temps}")
    assert any(paths.rstrip("/") in temp for temp in temps), temps
    assert_only_complete_files_visible(out, clean_effects)
    if any((out / "effects").glob("*.parquet")):  # readers skip the hidden temp
        effects = pd.read_parquet(out / "effects")
        assert effects.equals(pd.read_parquet(clean_effects / "effects").head(len(effects)))

    intervene_in_process(spec)
    ours, reference = visible_files(out), visible_files(clean_effects)
    assert sorted(ours) == sorted(reference)
    for rel, path in ours.items():
        assert comparable(rel, path) == comparable(rel, reference[rel]), f"{rel} differs"
    assert pd.read_parquet(out / "effects").equals(pd.read_parquet(clean_effects / "effects"))
    assert hidden_files(out) == [], "temps of the killed run were not removed"
