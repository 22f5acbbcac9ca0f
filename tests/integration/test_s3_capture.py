"""Capture into a store on object storage (a real S3 server: moto's standalone server on
127.0.0.1): the same bytes as the same capture to disk, in one process and on local Ray;
a SIGKILL mid-run, then a rerun, gives the same bytes; another config is refused; no
secret is ever written or shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.capture import capture
from pipeline.store import ActivationStore, StoreMismatchError
from pipeline.store.location import abort_unfinished_uploads, store_path
from tests.helpers import capture_config
from tests.s3_server import SECRET, run_module, serving

REPO = Path(__file__).resolve().parents[2]
BUCKET = "captures"
# Objects whose bytes are the data: every shard, token and docs file. (Records and
# store.json also hold times, hosts and the command, which differ run to run.)
DATA_PREFIXES = ("activations.zarr/layer_", "tokens/", "docs/")


@pytest.fixture(scope="module")
def s3():
    with serving(BUCKET) as (server, fs):
        yield server, fs


@pytest.fixture(scope="module")
def on_disk(tiny_gpt2_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("s3-capture") / "disk"
    capture(capture_config(tiny_gpt2_path, path), progress=False)
    return path


def data_objects(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()  # other processes wrote there since this client listed it
    names = [n for n in fs.find(prefix) if n[len(prefix) + 1 :].startswith(DATA_PREFIXES)]
    return {n[len(prefix) + 1 :]: fs.cat(n) for n in names}


def data_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix().startswith(DATA_PREFIXES)
    }


def checksums(records: list[dict]) -> list[dict]:
    return [{h: a["sha256"] for h, a in r["arrays"].items()} for r in records]


def test_capture_to_s3_writes_the_bytes_a_capture_to_disk_writes(s3, on_disk, tiny_gpt2_path):
    _, fs = s3
    result = capture(capture_config(tiny_gpt2_path, f"s3://{BUCKET}/one"), progress=False)
    assert result.units_computed == ActivationStore.open(on_disk).num_units
    assert data_objects(fs, f"{BUCKET}/one") == data_files(on_disk)
    there, here = ActivationStore.open(f"s3://{BUCKET}/one"), ActivationStore.open(on_disk)
    assert there.finished and there.verify()["num_committed"] == here.num_units
    assert checksums([there.unit_record(u) for u in range(there.num_units)]) == checksums(
        [here.unit_record(u) for u in range(here.num_units)]
    )
    again = capture(capture_config(tiny_gpt2_path, f"s3://{BUCKET}/one"), progress=False)
    assert again.units_computed == 0, "a rerun of a finished store computes nothing"
    with pytest.raises(StoreMismatchError, match="context_length"):
        capture(
            capture_config(tiny_gpt2_path, f"s3://{BUCKET}/one", context_length=32),
            progress=False,
        )


def run_capture(model: Path, out: str, env: dict[str, str], *extra: str):
    args = ["--set", f"model={model}", "--set", "hooks=[layer_1, layer_2]"]
    args += ["--set", "dtype=float32", "--set", "context_length=64", "--set", "rows_per_unit=512"]
    args += ["--set", "max_tokens=3000", "--set", "batch_size=4", "--set", "torch_threads=1"]
    return run_module("jobs.capture", *args, "--out", out, "--quiet", *extra, env=env)


def test_a_capture_killed_mid_run_then_rerun_gives_the_same_bytes(
    s3, on_disk, tiny_gpt2_path, tmp_path
):
    server, fs = s3
    out = f"s3://{BUCKET}/killed"
    faults = {"kill_unit": 3, "after_batches": 1}
    killed = run_capture(
        tiny_gpt2_path, out, {**server.env, "PIPELINE_FAULTS": json.dumps(faults)}, "--no-ray"
    )
    assert killed.returncode == -9, killed.stderr
    fs.invalidate_cache()
    committed = sorted(n.rsplit("/", 1)[-1] for n in fs.ls(f"{BUCKET}/killed/units"))
    assert committed == [f"unit-0000{u}.json" for u in range(3)]
    assert not fs.exists(f"{BUCKET}/killed/_SUCCESS")
    finished = run_capture(tiny_gpt2_path, out, server.env, "--no-ray")
    assert finished.returncode == 0, finished.stderr
    assert data_objects(fs, f"{BUCKET}/killed") == data_files(on_disk)
    fs.invalidate_cache()
    everything = b"".join(fs.cat(n) for n in fs.find(f"{BUCKET}/killed"))
    assert SECRET.encode() not in everything
    for done in (killed, finished):
        assert SECRET not in done.stdout + done.stderr


def test_capture_on_local_ray_to_s3_writes_the_same_bytes(s3, on_disk, tiny_gpt2_path):
    server, fs = s3
    done = run_capture(tiny_gpt2_path, f"s3://{BUCKET}/ray", server.env)
    assert done.returncode == 0, done.stderr
    assert data_objects(fs, f"{BUCKET}/ray") == data_files(on_disk)
    assert SECRET not in done.stdout + done.stderr


def test_a_ray_actor_killed_while_committing_to_s3_is_replaced_and_the_bytes_are_the_same(
    s3, on_disk, tiny_gpt2_path, tmp_path
):
    """SIGKILL inside the upload of unit 3's commit record (its shards already written):
    the record never appears, Ray replaces the actor, the unit is computed again and
    committed once, and the store holds the bytes of the capture to disk."""
    server, fs = s3
    once = tmp_path / "killed-once"
    faults = {"kill_at_byte": 40, "paths": "units/unit-00003", "once": str(once)}
    env = {**server.env, "PIPELINE_FAULTS": json.dumps(faults)}
    done = run_capture(tiny_gpt2_path, f"s3://{BUCKET}/actor-killed", env)
    assert done.returncode == 0, done.stderr
    assert once.exists(), "no actor died inside the commit record's upload"
    assert data_objects(fs, f"{BUCKET}/actor-killed") == data_files(on_disk)
    record = json.loads(fs.cat(f"{BUCKET}/actor-killed/units/unit-00003.json"))
    assert record["attempt"]["attempt"] == 1  # the first attempt died, the second committed
    store = ActivationStore.open(f"s3://{BUCKET}/actor-killed")
    store.verify()
    assert fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", []) == []


def test_finalize_aborts_multipart_uploads_left_by_killed_attempts(s3):
    _, fs = s3
    key = "left/activations.zarr/layer_1/c/0/0"
    fs.call_s3("create_multipart_upload", Bucket=BUCKET, Key=key)
    fs.call_s3("create_multipart_upload", Bucket=BUCKET, Key="elsewhere/x")
    assert abort_unfinished_uploads(store_path(f"s3://{BUCKET}/left")) == 1
    remaining = fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", [])
    assert [u["Key"] for u in remaining] == ["elsewhere/x"], "only the store's own prefix"


def test_a_missing_bucket_is_one_line_before_the_model_loads(s3, tiny_gpt2_path):
    server, _ = s3
    done = run_capture(tiny_gpt2_path, "s3://no-such-bucket/store", server.env, "--no-ray")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the bucket 'no-such-bucket' does not exist" in lines[0]
