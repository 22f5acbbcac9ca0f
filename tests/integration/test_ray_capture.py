"""Capture on an in-process local Ray cluster: equality with single-process, fault tolerance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray  # noqa: E402  (a required dependency: a broken install must fail, not skip)

from pipeline.capture import CaptureConfig, capture
from pipeline.ray_config import RayConfig
from pipeline.store.corpus import Corpus, CorpusConfig
from pipeline.store.reader import ActivationStore
from tests.helpers import (
    capture_config,
    leftover_temp_files,
    pydoc_texts,
    store_arrays_equal,
    write_pydoc_jsonl,
)

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


# Two half-CPU actors.
RAY = RayConfig(num_workers=2, num_cpus_per_worker=0.5, max_retries=2)


def ray_config(model, out, **overrides) -> CaptureConfig:
    """8 float16 units of layers 1 and 3 (run on Ray with `RAY`)."""
    ray_values = dict(
        hooks=("layer_1", "layer_3"),
        dtype="float16",
        max_tokens=4000,
        batch_size=2,
    )
    return capture_config(model, out, **{**ray_values, **overrides})


@pytest.fixture(scope="module")
def clean_store(tiny_gpt2_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "store"
    capture(ray_config(tiny_gpt2_path, out), progress=False)
    return out


def records(store: Path) -> dict[int, dict]:
    return {
        int(p.stem.split("-")[1]): json.loads(p.read_text())
        for p in (store / "units").glob("unit-*.json")
    }


def test_two_actors_equal_single_process(ray_cluster, tiny_gpt2_path, clean_store, tmp_path):
    from pipeline.distributed import run_capture

    result = run_capture(ray_config(tiny_gpt2_path, tmp_path / "ray"), RAY, progress=False)
    assert store_arrays_equal(clean_store, result.path)
    ActivationStore.open(result.path).verify()
    workers = {r["attempt"]["worker"] for r in records(result.path).values()}
    assert workers == {"w0", "w1"}


def test_killed_actor_is_replaced_and_its_unit_recomputed_once(
    ray_cluster, tiny_gpt2_path, clean_store, tmp_path, monkeypatch
):
    from pipeline.distributed import run_capture

    once = tmp_path / "killed-once"
    monkeypatch.setenv(
        "PIPELINE_FAULTS", json.dumps({"kill_unit": 3, "after_batches": 2, "once": str(once)})
    )
    result = run_capture(ray_config(tiny_gpt2_path, tmp_path / "ray"), RAY, progress=False)
    assert once.exists()  # an actor really died in unit 3
    ActivationStore.open(result.path).verify()
    assert store_arrays_equal(clean_store, result.path)
    by_unit = records(result.path)
    assert by_unit[3]["attempt"]["attempt"] == 1  # first attempt died, the second committed
    assert "." in by_unit[3]["attempt"]["worker"]  # ...on a replacement actor
    assert all(r["attempt"]["attempt"] == 0 for u, r in by_unit.items() if u != 3)


def test_unit_failing_beyond_retries_fails_the_job_naming_it(
    ray_cluster, tiny_gpt2_path, tmp_path, monkeypatch
):
    from pipeline.distributed import run_capture
    from pipeline.distributed.scheduler import UnitFailedError

    monkeypatch.setenv("PIPELINE_FAULTS", json.dumps({"raise_unit": 2}))
    config = ray_config(tiny_gpt2_path, tmp_path / "ray")
    with pytest.raises(
        UnitFailedError,
        match=r"(?s)unit 2 failed 2 times.*RuntimeError: injected failure in unit 2",
    ):
        run_capture(config, replace(RAY, max_retries=1), progress=False)
    assert 2 not in records(tmp_path / "ray")


def test_gpu_request_on_cluster_without_gpus_fails_at_once(ray_cluster, tiny_gpt2_path, tmp_path):
    from pipeline.distributed import run_capture

    started = time.monotonic()
    with pytest.raises(ValueError, match="has 0 GPUs"):
        run_capture(
            ray_config(tiny_gpt2_path, tmp_path / "ray"),
            replace(RAY, num_gpus_per_worker=1),
            progress=False,
        )
    assert time.monotonic() - started < 30
    assert not (tmp_path / "ray").exists()


def test_driver_killed_while_planning_then_rerun_equals_clean_run(
    ray_cluster, tiny_gpt2_path, tmp_path
):
    texts = "".join(json.dumps({"text": t}) + "\n" for t in pydoc_texts(24))
    (tmp_path / "corpus.jsonl").write_text(texts)
    out = tmp_path / "ray"
    config = ray_config(
        tiny_gpt2_path,
        out,
        max_tokens=None,
        corpus=CorpusConfig(kind="jsonl", path=str(tmp_path / "corpus.jsonl"), shard_bytes=1000),
    )
    args = driver_args(
        config,
        **{
            "corpus.kind": "jsonl",
            "corpus.path": str(tmp_path / "corpus.jsonl"),
            "corpus.shard_bytes": 1000,
        },
    )
    parts = lambda: sorted((out / "plan").glob("part-*.json"))  # noqa: E731
    _run_driver_until(ray_cluster, args, out, lambda: len(parts()) >= 3)
    planned_at_kill = len(parts())
    assert not (out / "store.json").exists(), "the driver must die while planning"
    num_shards = len(Corpus(config.corpus).shards())
    assert 3 <= planned_at_kill < num_shards

    from pipeline.distributed import run_capture

    result = run_capture(config, RAY, progress=False)
    ActivationStore.open(out).verify()
    assert leftover_temp_files(out) == []
    clean = tmp_path / "clean"
    capture(replace(config, out=str(clean)), progress=False)
    assert store_arrays_equal(clean, out)
    for folder in ("tokens", "docs", "plan"):
        names = sorted(p.name for p in (clean / folder).iterdir())
        assert names == sorted(p.name for p in (out / folder).iterdir())
        for name in names:  # part records hold no timestamps: every byte is the same
            if name == "plan.json":  # it also records the command line (none in-process)
                fingerprint = [
                    json.loads((s / folder / name).read_text())["fingerprint"] for s in (clean, out)
                ]
                assert fingerprint[0] == fingerprint[1]
                continue
            assert (clean / folder / name).read_bytes() == (out / folder / name).read_bytes()
    assert result.num_rows == ActivationStore.open(clean).num_rows


def driver_args(config: CaptureConfig, **extra) -> list[str]:
    """`jobs.capture --set` arguments for `ray_config`'s capture, plus `extra` keys."""
    sets = {
        "model": config.model,
        "hooks": "[layer_1, layer_3]",
        "dtype": "float16",
        "context_length": 64,
        "rows_per_unit": 512,
        "batch_size": 2,
        "ray.num_workers": 2,
        "ray.num_cpus_per_worker": 0.5,
        "torch_threads": 1,
        **extra,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _run_driver_until(ray_cluster, args, out, condition) -> None:
    """Run `jobs.capture` on the cluster and SIGKILL it once `condition()` holds."""
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_cluster.address_info["gcs_address"],
        "RAY_AUTH_MODE": "disabled",
    }
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.capture", "--quiet", *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not condition():
            assert driver.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.02)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2, "the killed job's tasks never exited"


def test_killed_driver_then_rerun_equals_clean_run(
    ray_cluster, tiny_gpt2_path, clean_store, tmp_path
):
    out = tmp_path / "ray"
    config = replace(ray_config(tiny_gpt2_path, out), max_tokens=8000)
    args = driver_args(config, max_tokens=8000)
    _run_driver_until(
        ray_cluster, args, out, lambda: (out / "units").exists() and len(records(out)) >= 2
    )
    # Ray kills a dead driver's actors asynchronously; one may still commit the unit it holds.
    # Count the committed units only once every actor of the killed job is gone.
    deadline = time.monotonic() + 60
    while any(_alive(r["attempt"]["pid"]) for r in records(out).values()):
        assert time.monotonic() < deadline, "an actor of the killed job is still running"
        time.sleep(0.1)
    committed_at_kill = records(out)
    assert 2 <= len(committed_at_kill) < 16, "the driver must die with work left"
    assert not (out / "_SUCCESS").exists()

    from pipeline.distributed import run_capture

    result = run_capture(config, RAY, progress=False)
    assert result.units_computed == 16 - len(committed_at_kill)
    ActivationStore.open(out).verify()
    assert leftover_temp_files(out) == []
    clean = tmp_path / "clean8000"
    capture(replace(config, out=str(clean)), progress=False)
    assert store_arrays_equal(clean, out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_planning_in_ray_tasks_writes_the_same_parts_as_one_process(
    ray_cluster, tiny_gpt2_path, tmp_path
):
    from transformers import AutoTokenizer

    from pipeline.distributed.planning import ray_planner
    from pipeline.store.corpus import Corpus, CorpusConfig
    from pipeline.store.plan import PlanConfig
    from pipeline.store.planner import plan_corpus

    corpus = Corpus(
        CorpusConfig(
            kind="jsonl", path=str(write_pydoc_jsonl(tmp_path / "c.jsonl")), shard_bytes=40_000
        )
    )
    assert len(corpus.shards()) > 8
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    config = PlanConfig(context_length=64, rows_per_unit=512)
    single = plan_corpus(tmp_path / "one", corpus, tokenizer, config, fsync=False)
    parallel = ray_planner(tiny_gpt2_path, max_in_flight=3)(
        tmp_path / "ray", corpus, tokenizer, config
    )
    assert parallel.fingerprint == single.fingerprint
    assert parallel.stats == single.stats and parallel.num_rows > 100_000
    for folder in ("tokens", "docs"):
        one = sorted((tmp_path / "one" / folder).glob("*.parquet"))
        assert len(one) == len(parallel.parts) > 8
        for path in one:
            assert path.read_bytes() == (tmp_path / "ray" / folder / path.name).read_bytes()


def test_sae_stats_on_ray_equal_local(ray_cluster, clean_store, tmp_path):
    import torch

    from pipeline import TopKSae
    from pipeline.distributed.stats import sae_feature_stats_on_ray
    from pipeline.stats import sae_feature_stats

    torch.manual_seed(0)
    sae = TopKSae(n_latents=64, n_inputs=64, k=4)
    sae.save(tmp_path / "sae")
    local = sae_feature_stats(clean_store, "layer_3", tmp_path / "sae", top_k=4)
    remote = sae_feature_stats_on_ray(
        clean_store, "layer_3", tmp_path / "sae", top_k=4, num_tasks=3
    )
    assert torch.equal(local.count_F, remote.count_F)
    assert torch.equal(local.examples.row_ids(), remote.examples.row_ids())
    torch.testing.assert_close(local.sum_F, remote.sum_F)
