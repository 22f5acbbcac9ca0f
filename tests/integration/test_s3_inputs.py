"""Inputs on object storage: corpora streamed from a real S3 server (moto's standalone server
on 127.0.0.1) read like the same files on disk and fetch only the ranges a shard needs; a
model folder on s3:// is copied once into a per-node cache, checked by its weights hash; a
capture from both gives the same store as from disk, and no secret is ever shown."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.capture import capture
from pipeline.capture.config_io import config_to_dict
from pipeline.model.remote import CACHE_ENV, MARKER, local_model_folder, weights_fingerprint
from pipeline.store import ActivationStore
from pipeline.store.corpus import Corpus, CorpusConfig
from pipeline.store.corpus_readers import REMOTE_BLOCK
from tests.helpers import capture_config, pydoc_texts, write_pydoc_jsonl
from tests.s3_server import SECRET, run_module, serving

REPO = Path(__file__).resolve().parents[2]
BUCKET = "inputs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("model-cache"))
    with serving(BUCKET, **{CACHE_ENV: cache}) as (server, fs):
        yield server, fs


@pytest.fixture(scope="module")
def corpus_dir(s3, tmp_path_factory):
    """A folder of JSONL (plain and gzipped) and Parquet files, also at s3://inputs/corpus."""
    _, fs = s3
    root = tmp_path_factory.mktemp("corpus")
    write_pydoc_jsonl(root / "pydoc.jsonl")
    with gzip.open(root / "pydoc.jsonl.gz", "wb") as f:
        f.write((root / "pydoc.jsonl").read_bytes())
    texts = pydoc_texts()
    (root / "parquet" / "_private").mkdir(parents=True)
    for k, part in enumerate((texts[::2], texts[1::2])):
        table = pa.table({"text": part})
        pq.write_table(table, root / "parquet" / f"part-{k}.parquet", row_group_size=40)
    pq.write_table(pa.table({"text": ["not data"]}), root / "parquet" / "_private" / "x.parquet")
    fs.put(str(root), f"{BUCKET}/corpus", recursive=True)
    return root


@pytest.fixture(scope="module")
def model_url(s3, tiny_gpt2_path):
    _, fs = s3
    fs.put(str(tiny_gpt2_path), f"{BUCKET}/models/gpt2", recursive=True)
    return f"s3://{BUCKET}/models/gpt2"


def fetch_counter(monkeypatch) -> list[int]:
    """Bytes of every ranged GET that s3fs file objects make (appended as they happen)."""
    import s3fs.core

    fetched: list[int] = []
    fetch = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        data = fetch(self, start, end)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    return fetched


@pytest.mark.parametrize(
    "kind, pattern",
    [("jsonl", "pydoc.jsonl"), ("jsonl", "*.jsonl.gz"), ("parquet", "parquet"),
     ("text", "*.jsonl"), ("text", "pydoc.*")],
    ids=["jsonl", "jsonl-gz", "parquet-folder", "text-lines", "text-files"],
)  # fmt: skip
def test_a_corpus_on_s3_gives_the_shards_and_documents_of_the_same_files_on_disk(
    corpus_dir, kind, pattern
):
    one_per_line = pattern == "*.jsonl"  # text-lines
    config = CorpusConfig(
        kind=kind, path=str(corpus_dir / pattern), shard_bytes=2**16, one_per_line=one_per_line
    )
    local, remote = str(corpus_dir), f"s3://{BUCKET}/corpus"
    here = Corpus(config)
    there = Corpus(dataclasses.replace(config, path=f"{remote}/{pattern}"))
    shards = [(s.path.replace(local, remote), s.start, s.stop) for s in here.shards()]
    assert len(shards) > 1 or pattern.endswith(".gz")  # a compressed file is one shard
    assert [(s.path, s.start, s.stop) for s in there.shards()] == shards
    assert there.fingerprint() == here.fingerprint()  # relative names and sizes, as on disk
    docs = [(d.doc_id, d.source.replace(local, remote), d.text) for d in here]
    assert [(d.doc_id, d.source, d.text) for d in there] == docs
    assert docs and all(text.strip() for _, _, text in docs)


def test_reading_one_shard_of_a_large_jsonl_object_fetches_about_the_shard(
    s3, tmp_path, monkeypatch
):
    _, fs = s3
    local = write_pydoc_jsonl(tmp_path / "big.jsonl", repeat=16)
    size = local.stat().st_size
    fs.put_file(str(local), f"{BUCKET}/big/big.jsonl")
    shard_bytes = 2**20
    corpus = Corpus(
        CorpusConfig(kind="jsonl", path=f"s3://{BUCKET}/big/big.jsonl", shard_bytes=shard_bytes)
    )
    shards = corpus.shards()
    fetched = fetch_counter(monkeypatch)
    middle = shards[len(shards) // 2]
    docs = list(corpus.read_shard(middle))
    print(f"jsonl: one shard of {shard_bytes} B fetched {sum(fetched)} B of a {size} B object")
    assert size > 6 * shard_bytes and docs
    # The shard's range, the end of its last line and at most one block read ahead.
    assert shard_bytes <= sum(fetched) <= shard_bytes + REMOTE_BLOCK + 1


def test_reading_one_shard_of_a_large_parquet_object_fetches_only_its_row_groups(
    s3, tmp_path, monkeypatch
):
    _, fs = s3
    rng = np.random.default_rng(0)
    texts = [rng.bytes(2000).hex() for _ in range(2000)]  # incompressible: 8 MB of text
    pq.write_table(pa.table({"text": texts}), tmp_path / "big.parquet", row_group_size=100)
    size = (tmp_path / "big.parquet").stat().st_size
    footer = pq.ParquetFile(tmp_path / "big.parquet").metadata.serialized_size
    fs.put_file(str(tmp_path / "big.parquet"), f"{BUCKET}/big/big.parquet")
    shard_bytes = 2**20
    url = f"s3://{BUCKET}/big/big.parquet"
    corpus = Corpus(CorpusConfig(kind="parquet", path=url, shard_bytes=shard_bytes))
    fetched = fetch_counter(monkeypatch)
    shards = corpus.shards()
    planned = sum(fetched)
    fetched.clear()
    middle = shards[len(shards) // 2]
    docs = list(corpus.read_shard(middle))
    print(
        f"parquet: planning fetched {planned} B (footer {footer} B), one shard of {shard_bytes} B "
        f"fetched {sum(fetched)} B of a {size} B object"
    )
    assert [d.text for d in docs] == texts[middle.start : middle.stop]
    # Planning reads the footer (pyarrow's first read is the last 64 KiB), not the data.
    assert size > 6 * shard_bytes and planned <= footer + 2**16 + 8
    assert sum(fetched) <= shard_bytes + REMOTE_BLOCK + 2**17


def test_a_capture_from_a_model_and_corpus_on_s3_writes_the_store_of_the_local_inputs(
    s3, corpus_dir, model_url, tiny_gpt2_path, tmp_path
):
    here = tmp_path / "local"
    there = tmp_path / "remote"
    corpus = CorpusConfig(kind="jsonl", path=str(corpus_dir / "pydoc.jsonl"), shard_bytes=2**16)
    capture(capture_config(tiny_gpt2_path, here, corpus=corpus))
    corpus = CorpusConfig(kind="jsonl", path=f"s3://{BUCKET}/corpus/pydoc.jsonl", shard_bytes=2**16)
    capture(capture_config(model_url, there, corpus=corpus))
    a, b = ActivationStore.open(here), ActivationStore.open(there)
    assert a.hooks == b.hooks and a.num_rows == b.num_rows > 0
    for hook in a.hooks:
        np.testing.assert_array_equal(b.read(hook), a.read(hook))
    assert b.tokens().equals(a.tokens())
    ours, theirs = a.meta["fingerprint"], b.meta["fingerprint"]
    assert theirs["model"] == model_url  # the URL, not the cache folder
    assert {k: v for k, v in theirs.items() if k != "model"} == {
        k: v for k, v in ours.items() if k != "model"
    }
    # Stage 2 replays the store's own model: the URL resolves to this node's cached copy.
    from pipeline.model.remote import local_model_folder
    from pipeline.stats.provenance import checked_model_path
    from pipeline.stats.sae_stats import renderer_for_store

    assert checked_model_path(b) == local_model_folder(model_url)
    assert renderer_for_store(b) is not None


def test_the_model_cache_is_used_again_without_a_download(s3, model_url, tiny_gpt2_path):
    _, fs = s3
    url = model_url.replace("gpt2", "gpt2-reused")
    fs.put(str(tiny_gpt2_path), url.removeprefix("s3://"), recursive=True)
    folder = local_model_folder(url)
    assert weights_fingerprint(folder) == weights_fingerprint(tiny_gpt2_path)
    assert (folder / MARKER).is_file() and folder.parent == Path(os.environ[CACHE_ENV])
    stamp = folder.stat().st_ino, (folder / "model.safetensors").stat().st_mtime_ns
    fs.rm(url.removeprefix("s3://"), recursive=True)  # a download would now fail
    assert local_model_folder(url + "/") == folder
    assert (folder.stat().st_ino, (folder / "model.safetensors").stat().st_mtime_ns) == stamp


def test_a_damaged_model_cache_is_detected_and_copied_again(s3, model_url, tiny_gpt2_path):
    folder = local_model_folder(model_url)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)
    assert local_model_folder(model_url) == folder
    assert weights.stat().st_size == size
    assert weights_fingerprint(folder) == weights_fingerprint(tiny_gpt2_path)
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")] == [
        f".{folder.name}.lock"
    ]  # no temporary or damaged copy left behind


def test_copies_racing_on_one_node_leave_one_intact_folder(s3, model_url, tiny_gpt2_path):
    _, fs = s3
    url = model_url.replace("gpt2", "gpt2-raced")
    fs.put(str(tiny_gpt2_path), url.removeprefix("s3://"), recursive=True)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(local_model_folder(url))) for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    folder = results[0]
    assert weights_fingerprint(folder) == weights_fingerprint(tiny_gpt2_path)
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    assert leftovers == [f".{folder.name}.lock"]


def test_language_model_loads_a_model_folder_on_s3_and_keeps_its_url(s3, model_url):
    from pipeline import LanguageModel

    lm = LanguageModel.from_pretrained(model_url)
    assert lm.name_or_path == model_url and lm.layers.num_blocks == 4


def test_an_hf_disk_corpus_on_s3_is_refused_in_the_config():
    with pytest.raises(ValueError, match="must be a local folder for kind 'hf_disk'"):
        CorpusConfig(kind="hf_disk", path=f"s3://{BUCKET}/dataset")


def test_local_model_paths_are_returned_unchanged(tiny_gpt2_path):
    assert local_model_folder(str(tiny_gpt2_path)) == tiny_gpt2_path
    assert local_model_folder("relative/model") == Path("relative/model")


def run_capture_job(config_file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_module("jobs.capture", "--config", str(config_file), "--no-ray", env=env)


def test_a_capture_job_from_s3_inputs_never_shows_the_secret(s3, model_url, tmp_path):
    server, _ = s3
    env = {**server.env, CACHE_ENV: str(tmp_path / "cache")}
    corpus = CorpusConfig(kind="jsonl", path=f"s3://{BUCKET}/corpus/*.jsonl.gz")
    values = config_to_dict(capture_config(model_url, tmp_path / "store", corpus=corpus))
    (tmp_path / "capture.yaml").write_text(yaml.safe_dump(values))
    done = run_capture_job(tmp_path / "capture.yaml", env)
    assert done.returncode == 0, done.stderr
    values["model"] = f"s3://{BUCKET}/models/missing"
    values["out"] = str(tmp_path / "refused")
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(values))
    refused = run_capture_job(tmp_path / "missing.yaml", env)
    assert refused.returncode != 0 and "models/missing holds no files" in refused.stderr
    assert json.loads((tmp_path / "store" / "store.json").read_text())["fingerprint"]["model"] == (
        model_url
    )
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(SECRET.encode() in blob for blob in written)
    for run in (done, refused):
        assert SECRET not in run.stdout + run.stderr


def test_leftovers_of_killed_copies_are_swept_and_live_copies_kept(s3, model_url):
    folder = local_model_folder(model_url)
    dead_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = folder.parent / f".{folder.name}.part-{dead_pid}-0badc0de"
    recent = folder.parent / f".{folder.name}.part-{dead_pid}-00c0ffee"
    live = folder.parent / f".{folder.name}.part-{os.getpid()}-0a11ce00"
    damaged = folder.parent / f".{folder.name}.damaged-deadbeef"
    for leftover in (stale, recent, live, damaged):
        (leftover / "sub").mkdir(parents=True)
        (leftover / "sub" / "model.safetensors").write_bytes(b"half a download")
    hour_ago = time.time() - 3600
    for path in (stale, stale / "sub", stale / "sub" / "model.safetensors"):
        os.utime(path, (hour_ago, hour_ago))
    assert local_model_folder(model_url) == folder  # the cache is intact: reused
    left = sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))
    # A dead copy that changed recently may belong to another container: kept for now.
    assert left == sorted([f".{folder.name}.lock", recent.name, live.name])
    for leftover in (recent, live):
        shutil.rmtree(leftover)
