"""Stores on object storage, read: a store copied to a real S3 server (moto's standalone
server on 127.0.0.1) reads back through `ActivationStore`, the jobs and plain
pandas / pyarrow / zarr exactly as the same store on disk, and no secret is ever shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import TopKSae
from pipeline.capture import capture
from pipeline.store import ActivationStore, StoreVerificationError
from pipeline.store.location import store_path
from pipeline.store.reader import UnfinishedStoreError
from tests.helpers import capture_config
from tests.s3_server import SECRET, run_module, serving

REPO = Path(__file__).resolve().parents[2]
HOOK = "layer_2"
BUCKET = "activations"


@pytest.fixture(scope="module")
def s3():
    with serving(BUCKET) as (server, fs):
        yield server, fs


@pytest.fixture(scope="module")
def stores(s3, tiny_gpt2_path, tmp_path_factory):
    """(local store, the same store uploaded to s3://activations/store)."""
    _, fs = s3
    local = tmp_path_factory.mktemp("s3-local") / "store"
    capture(capture_config(tiny_gpt2_path, local, hooks=(HOOK, "layer_3"), max_tokens=1500))
    fs.put(str(local), f"{BUCKET}/store", recursive=True)
    return local, f"s3://{BUCKET}/store"


def test_a_store_on_s3_reads_back_equal_to_the_same_store_on_disk(stores):
    local, url = stores
    here, there = ActivationStore.open(local), ActivationStore.open(url)
    assert there.finished and there.meta == here.meta
    for hook in here.hooks:
        np.testing.assert_array_equal(there.read(hook), here.read(hook))
    rows = np.array([1400, 3, 777, 3])
    np.testing.assert_array_equal(there.read(HOOK, rows), here.read(HOOK, rows))
    assert there.tokens().equals(here.tokens())
    assert there.tokens(rows=rows).equals(here.tokens(rows=rows))
    assert there.docs().equals(here.docs())
    assert there.verify() == here.verify()  # every shard and token file hashed


def test_verify_finds_a_corrupted_object(s3, stores, tmp_path):
    _, fs = s3
    local, _ = stores
    fs.put(str(local), f"{BUCKET}/damaged", recursive=True)
    record = json.loads((local / "units" / "unit-00001.json").read_text())
    shard = record["arrays"][HOOK]["file"]
    data = bytearray(fs.cat(f"{BUCKET}/damaged/{shard}"))
    data[len(data) // 2] ^= 0xFF
    fs.pipe(f"{BUCKET}/damaged/{shard}", bytes(data))
    with pytest.raises(StoreVerificationError, match="unit 1, hook 'layer_2': data does not match"):
        ActivationStore.open(f"s3://{BUCKET}/damaged").verify()


def test_an_unfinished_store_on_s3_is_refused_unless_partial(s3, stores):
    _, fs = s3
    local, _ = stores
    fs.put(str(local), f"{BUCKET}/unfinished", recursive=True)
    fs.rm(f"{BUCKET}/unfinished/_SUCCESS")
    first = sorted(fs.ls(f"{BUCKET}/unfinished/units"))[0]
    fs.rm(first)
    url = f"s3://{BUCKET}/unfinished"
    with pytest.raises(UnfinishedStoreError, match="2 of 3 units committed"):
        ActivationStore.open(url).read(HOOK)
    partial = ActivationStore.open(url, partial=True)
    assert partial.data_units() == [1, 2]


def test_pandas_pyarrow_and_zarr_read_it_without_the_package(s3, stores):
    server, _ = s3
    local, url = stores
    # The snippet of docs/operations.md: credentials and endpoint from the environment.
    import pyarrow.parquet as pq
    import s3fs
    import zarr

    tokens = pd.read_parquet(f"{url}/tokens")
    acts = zarr.open_group(f"{url}/activations.zarr", mode="r")[HOOK]
    fs = s3fs.S3FileSystem()
    docs = pq.read_table(f"{url.removeprefix('s3://')}/docs", filesystem=fs).to_pandas()
    here = ActivationStore.open(local)
    pd.testing.assert_frame_equal(
        tokens.sort_values("row").reset_index(drop=True), here.tokens().to_pandas()
    )
    np.testing.assert_array_equal(acts[tokens.row[:5].to_numpy()], here.read(HOOK, slice(0, 5)))
    assert len(docs) == here.docs().num_rows
    # Explicit options work too, for a client without the environment variables.
    options = {"endpoint_url": server.endpoint, "key": "test-key", "secret": SECRET}
    assert len(pd.read_parquet(f"{url}/tokens", storage_options=options)) == here.num_rows


def test_jobs_read_a_store_on_s3_and_never_show_the_secret(s3, stores, tmp_path):
    server, _ = s3
    local, url = stores
    torch.manual_seed(0)
    TopKSae(n_latents=32, n_inputs=64, k=4).save(tmp_path / "sae")
    outputs = []
    stats_out = {"disk": str(tmp_path / "stats-disk"), "s3": f"s3://{BUCKET}/stats"}
    for where, store in (("disk", str(local)), ("s3", url)):
        inspect = run_module("jobs.inspect", store, env=server.env)
        assert inspect.returncode == 0, inspect.stderr
        stats = run_module(
            "jobs.sae_stats", "--store", store, "--hook", HOOK, "--sae", str(tmp_path / "sae"),
            "--out", stats_out[where], "--no-ray", env=server.env,
        )  # fmt: skip
        assert stats.returncode == 0, stats.stderr
        train = run_module(
            "jobs.train_sae", "--store", store, "--hook", HOOK, "--n-latents", "16", "--k", "2",
            "--steps", "3", "--batch-size", "64", "--out", str(tmp_path / f"sae-{where}"),
            env=server.env,
        )  # fmt: skip
        assert train.returncode == 0, train.stderr
        outputs += [inspect.stdout + inspect.stderr, stats.stdout + stats.stderr]
        outputs.append(train.stdout + train.stderr)
    for name in ("features.parquet", "examples.parquet", "logits.parquet"):
        here = pd.read_parquet(tmp_path / "stats-disk" / name)
        there = pd.read_parquet(f"{stats_out['s3']}/{name}")  # the output, on the bucket
        pd.testing.assert_frame_equal(here, there)
    trained = json.loads((tmp_path / "sae-s3" / "sae" / "cfg.json").read_text())
    assert trained["metadata"]["store"] == url
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    _, fs = s3
    fs.invalidate_cache()
    written += [fs.cat(name) for name in fs.find(f"{BUCKET}/stats")]
    assert not any(SECRET.encode() in blob for blob in written)
    assert not any(SECRET in text for text in outputs)


def test_training_writes_and_resumes_on_object_storage_like_on_disk(s3, stores, tmp_path):
    """train_sae --out s3://: checkpoints, metrics, evaluations and the SAE land on the
    bucket; a resume from a checkpoint on the bucket continues the run there; the weights
    equal the same run's on disk; sae_stats loads the SAE from the bucket."""
    from jobs.train_sae import main as train_main
    from pipeline.sae import load_sae

    server, fs = s3
    local, url = stores
    outs = {"disk": str(tmp_path / "run"), "s3": f"s3://{BUCKET}/training"}
    common = ["--hook", HOOK, "--n-latents", "16", "--k", "2", "--batch-size", "64", "--quiet"]
    common += ["--checkpoint-every", "2", "--eval-units", "1"]
    for where, out in outs.items():
        store = str(local) if where == "disk" else url
        assert train_main(["--store", store, *common, "--steps", "4", "--out", out]) == 0
        step_2 = f"{out}/checkpoints/step_00000002"
        resumed = ["--store", store, *common, "--steps", "6", "--out", out]
        assert train_main([*resumed, "--resume", step_2]) == 0
    fs.invalidate_cache()
    names = sorted(p.removeprefix(f"{BUCKET}/training/") for p in fs.find(f"{BUCKET}/training"))
    here = sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*"))
    assert names == [name for name in here if (tmp_path / "run" / name).is_file()]
    assert "checkpoints/step_00000006/trainer_state.json" in names
    for name in (
        "sae/sae_weights.safetensors",
        "checkpoints/step_00000004/trainer_state.safetensors",
    ):
        assert fs.cat(f"{BUCKET}/training/{name}") == (tmp_path / "run" / name).read_bytes(), name
    metrics = fs.cat(f"{BUCKET}/training/metrics.jsonl").decode().splitlines()
    assert len(metrics) == len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    evals = [
        json.loads(line)
        for line in fs.cat(f"{BUCKET}/training/checkpoint_evals.jsonl").splitlines()
    ]
    assert [e["step"] for e in evals] == [2, 4, 4, 6]  # the resumed run re-evaluates step 4
    trained = load_sae(f"{outs['s3']}/sae")
    cfg = json.loads(store_path(f"{outs['s3']}/sae/cfg.json").read_text())
    assert cfg["metadata"]["store"] == url and cfg["metadata"]["steps"] == 6
    torch.testing.assert_close(
        trained.state_dict(), load_sae(tmp_path / "run" / "sae").state_dict()
    )
    stats = run_module(
        "jobs.sae_stats", "--store", url, "--hook", HOOK, "--sae", f"{outs['s3']}/sae",
        "--out", str(tmp_path / "stats"), "--no-ray", env=server.env,
    )  # fmt: skip
    assert stats.returncode == 0, stats.stderr


def test_training_into_a_missing_bucket_is_refused_in_one_line(s3, stores, capsys):
    from jobs.train_sae import main as train_main

    _, fs = s3
    _, url = stores
    train = ["--store", url, "--hook", HOOK, "--n-latents", "8", "--k", "2", "--steps", "1"]
    assert train_main([*train, "--out", "s3://no-such-bucket/sae"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the bucket 'no-such-bucket' does not exist" in error[0]
    assert not fs.exists("no-such-bucket")


def test_intervene_and_eval_sae_replay_a_store_on_s3_like_the_store_on_disk(s3, stores, tmp_path):
    server, _ = s3
    local, url = stores
    torch.manual_seed(1)
    TopKSae(n_latents=32, n_inputs=64, k=4).save(tmp_path / "sae")
    effects, metrics = {}, {}
    for where, store in (("disk", str(local)), ("s3", url)):
        spec = tmp_path / f"spec-{where}.yaml"
        run_out = str(tmp_path / "run-disk") if where == "disk" else f"s3://{BUCKET}/run"
        spec.write_text(
            f"store: {store}\nout: {run_out}\nmax_units: 2\n"
            "steps:\n  - {name: half, layer: layer_2, scale: 0.5}\n"
        )
        run = run_module(
            "jobs.intervene", "--spec", str(spec), "--no-ray", "--quiet", env=server.env
        )
        assert run.returncode == 0, run.stderr
        effects[where] = pd.read_parquet(f"{run_out}/effects")
        inspect = run_module("jobs.inspect", run_out, env=server.env)
        assert inspect.returncode == 0 and "2 units" in inspect.stdout, inspect.stdout
        out = str(tmp_path / "eval-disk") if where == "disk" else f"s3://{BUCKET}/eval"
        evaluated = run_module(
            "jobs.eval_sae", "--store", store, "--hook", HOOK, "--sae", str(tmp_path / "sae"),
            "--out", out, "--max-units", "1", "--no-ray", "--quiet", env=server.env,
        )  # fmt: skip
        assert evaluated.returncode == 0, evaluated.stderr
        metrics[where] = json.loads((store_path(out) / "eval.json").read_text())
        assert SECRET not in run.stdout + run.stderr + evaluated.stdout + evaluated.stderr
    pd.testing.assert_frame_equal(effects["disk"], effects["s3"])
    assert metrics["s3"]["store"] == url
    # The intervention report streams the effects from the bucket: the same page.
    sites = {"disk": tmp_path / "run-disk-report", "s3": tmp_path / "run-s3-report"}
    for where, run_out in (("disk", str(tmp_path / "run-disk")), ("s3", f"s3://{BUCKET}/run")):
        report = run_module("jobs.report", run_out, "--out", str(sites[where]), env=server.env)
        assert report.returncode == 0, report.stderr
    renamed = {str(tmp_path / "run-disk"): "RUN", str(local): "STORE", ": run-disk<": ": run<"}
    here = _site_files(sites["disk"], renamed)
    there = _site_files(sites["s3"], {f"s3://{BUCKET}/run": "RUN", url: "STORE"})
    assert there == here
    for key in ("fve", "l0", "ce_loss_clean", "ce_loss_spliced", "ce_loss_recovered", "kl_spliced"):
        assert metrics["s3"][key] == metrics["disk"][key]


def _site_files(root: Path, replace: dict[str, str]) -> dict[str, str]:
    """Every file of a report site as text, with the run-specific paths replaced."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        for old, new in replace.items():
            text = text.replace(old, new)
        files[str(path.relative_to(root))] = text
    return files


def test_reports_read_their_input_on_s3_and_write_the_site_there(s3, stores, tmp_path, capsys):
    """A feature report of a sae_stats output on s3:// written to s3://, and a store
    report of a store on s3://, are page for page the same as the reports of the same
    outputs on disk (paths aside); the site's index.html is uploaded last."""
    from jobs.report import main as report_main
    from jobs.sae_stats import main as stats_main

    _, fs = s3
    local, url = stores
    torch.manual_seed(2)
    TopKSae(n_latents=16, n_inputs=64, k=4).save(f"s3://{BUCKET}/report-sae")  # SAE on s3
    stats = f"s3://{BUCKET}/report-stats"
    run = ["--hook", HOOK, "--sae", f"s3://{BUCKET}/report-sae", "--no-ray", "--quiet"]
    assert stats_main(["--store", url, *run, "--out", stats]) == 0
    fs.invalidate_cache()
    fs.get(f"{BUCKET}/report-stats", str(tmp_path / "stats"), recursive=True)

    site = f"s3://{BUCKET}/report-site"
    assert report_main([stats, "--out", site]) == 0
    assert "written in" in capsys.readouterr().out
    assert report_main([str(tmp_path / "stats"), "--out", str(tmp_path / "site")]) == 0
    fs.invalidate_cache()
    fs.get(f"{BUCKET}/report-site", str(tmp_path / "site-s3"), recursive=True)
    s3_pages = _site_files(tmp_path / "site-s3", {stats: "STATS"})
    disk_pages = _site_files(tmp_path / "site", {str(tmp_path / "stats"): "STATS"})
    assert len(s3_pages) > 16 and s3_pages == disk_pages

    assert report_main([url, "--out", str(tmp_path / "store-site-s3")]) == 0
    assert report_main([str(local), "--out", str(tmp_path / "store-site")]) == 0
    there = _site_files(tmp_path / "store-site-s3", {url: "STORE"})
    here = _site_files(tmp_path / "store-site", {str(local): "STORE"})
    assert there == here
    assert report_main([stats, "--out", site]) == 2  # a report is there: refused
    assert "already holds a report" in capsys.readouterr().err
