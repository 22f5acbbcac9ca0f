"""Trust at the edges: unfinished stores refused by readers, reruns that check what they
trust, outputs that never swallow or delete foreign files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.inspect import main as inspect_main
from jobs.sae_stats import main as stats_main
from jobs.train_sae import main as train_main
from pipeline.capture import capture
from pipeline.sae import TopKSae
from pipeline.sae.from_store import store_chunks
from pipeline.stats import sae_feature_stats
from pipeline.store import ActivationStore, UnfinishedStoreError
from tests.helpers import capture_config, leftover_temp_files, store_arrays_equal

NUM_UNITS = 6  # 3000 tokens in 512-row units


@pytest.fixture(scope="module")
def clean(tiny_gpt2_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "clean"
    capture(capture_config(tiny_gpt2_path, out), progress=False, command="python -m jobs.capture")
    return out


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trust-sae") / "sae"
    TopKSae(n_latents=48, n_inputs=64, k=4).save(path)
    return path


def unfinish(clean: Path, to: Path, keep: list[int]) -> Path:
    """A copy of the store as a capture killed after committing units `keep` leaves it."""
    shutil.copytree(clean, to)
    (to / "_SUCCESS").unlink()
    for record in (to / "units").glob("unit-*.json"):
        if int(record.stem.split("-")[1]) not in keep:
            record.unlink()
    return to


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- unfinished stores are refused by every reader -------------------------------------


def test_reading_an_unfinished_store_is_refused_naming_the_command(clean, tmp_path):
    store = ActivationStore.open(unfinish(clean, tmp_path / "s", keep=[0, 1, 4]))
    for read in (
        lambda: store.read("layer_1", slice(0, 10)),
        lambda: next(store.iter_batches("layer_1", 100)),
        lambda: store.to_pandas(rows=slice(0, 10)),
    ):
        with pytest.raises(UnfinishedStoreError, match="3 of 6 units committed") as info:
            read()
        assert "python -m jobs.capture" in str(info.value) and "partial=True" in str(info.value)
    assert store.tokens(slice(0, 10)).num_rows == 10  # the token table is complete


def test_a_partial_store_reads_only_committed_units_never_zero_fill(clean, tmp_path):
    store = ActivationStore.open(unfinish(clean, tmp_path / "s", keep=[0, 1, 4]), partial=True)
    full = ActivationStore.open(clean)
    assert store.data_units() == [0, 1, 4]
    assert store.data_row_runs() == [(0, 1024), (2048, 2560)]
    rows = [start for start, _ in store.iter_batches("layer_1", 300)]
    assert rows == [0, 300, 600, 900, 2048, 2348]
    np.testing.assert_array_equal(
        store.read("layer_1", slice(2048, 2560)), full.read("layer_1", slice(2048, 2560))
    )
    with pytest.raises(ValueError, match=r"units \[2\] that are not committed"):
        store.read("layer_1", [5, 1100])
    chunks = store_chunks(store, "layer_1", chunk_rows=400)
    seen = np.concatenate([next(chunks) for _ in range(5)])
    assert len(seen) == 1536 and (np.abs(seen).sum(axis=1) > 0).all()


def test_sae_stats_refuse_an_unfinished_store_unless_partial(clean, sae_dir, tmp_path):
    path = unfinish(clean, tmp_path / "s", keep=[2, 3])
    with pytest.raises(UnfinishedStoreError, match="2 of 6 units committed"):
        sae_feature_stats(path, "layer_1", sae_dir)
    assert sae_feature_stats(path, "layer_1", sae_dir, partial=True).num_tokens == 1024


def test_jobs_refuse_an_unfinished_store_in_one_line(clean, sae_dir, tmp_path, capsys):
    path = unfinish(clean, tmp_path / "s", keep=[0])
    train = ["--store", str(path), "--hook", "layer_1", "--n-latents", "16", "--k", "2"]
    train += ["--steps", "4", "--batch-size", "64", "--quiet", "--out", str(tmp_path / "sae")]
    assert train_main(train) == 2
    assert "1 of 6 units committed" in one_error_line(capsys)
    assert not (tmp_path / "sae").exists()
    assert train_main([*train, "--partial"]) == 0
    assert (tmp_path / "sae" / "sae" / "cfg.json").exists()
    capsys.readouterr()

    stats = ["--store", str(path), "--hook", "layer_1", "--sae", str(sae_dir), "--no-ray"]
    assert stats_main([*stats, "--out", str(tmp_path / "stats")]) == 2
    assert "1 of 6 units committed" in one_error_line(capsys)
    assert stats_main([*stats, "--out", str(tmp_path / "stats"), "--partial"]) == 0
    assert "512 tokens" in capsys.readouterr().out

    assert inspect_main([str(path), "--quick"]) == 1
    assert "finish it with: python -m jobs.capture" in capsys.readouterr().out


# --- a rerun checks what it trusts --------------------------------------------------------


def damage_empty_record(store: Path) -> None:
    (store / "units" / "unit-00002.json").write_text("")


def damage_delete_shard(store: Path) -> None:
    (store / "activations.zarr" / "layer_2" / "c" / "4" / "0").unlink()


def damage_truncate_token_file(store: Path) -> None:
    path = store / "tokens" / "part-00000.parquet"
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage, expected",
    [
        (damage_empty_record, "unit 2: commit record cannot be read"),
        (
            damage_delete_shard,
            "unit 4, hook 'layer_2': shard activations.zarr/layer_2/c/4/0 is missing",
        ),
        (
            damage_truncate_token_file,
            "part 0: tokens file tokens/part-00000.parquet does not match",
        ),
    ],  # fmt: skip
    ids=["empty-record", "deleted-shard", "truncated-token-file"],
)
def test_a_rerun_redoes_what_fails_its_check(
    clean, tiny_gpt2_path, tmp_path, capsys, damage, expected
):
    store = tmp_path / "s"
    shutil.copytree(clean, store)
    damage(store)
    result = capture(capture_config(tiny_gpt2_path, store), progress=False)
    assert len(result.repairs) == 1 and expected in result.repairs[0]
    assert expected in capsys.readouterr().err
    assert result.units_computed == (0 if "part" in expected else 1)
    assert store_arrays_equal(clean, store)
    assert leftover_temp_files(store) == []
    ActivationStore.open(store).verify()
    for name in ("tokens/part-00000.parquet", "docs/part-00000.parquet"):
        assert (store / name).read_bytes() == (clean / name).read_bytes()


def test_a_flipped_byte_is_found_only_by_verify(clean, tiny_gpt2_path, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(clean, store)
    shard = store / "activations.zarr" / "layer_1" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    config = capture_config(tiny_gpt2_path, store)
    assert capture(config, progress=False).units_computed == 0  # same size: trusted
    from dataclasses import replace

    result = capture(replace(config, verify=True), progress=False)
    assert result.units_computed == 1
    assert "unit 1, hook 'layer_1': data does not match its sha256" in result.repairs[0]
    assert store_arrays_equal(clean, store)
    ActivationStore.open(store).verify()


# --- outputs: nothing foreign is mixed in or deleted ----------------------------------------


def test_train_sae_refuses_an_earlier_run_a_store_and_foreign_files(clean, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["--store", str(clean), "--hook", "layer_1", "--n-latents", "16", "--k", "2"]
    train += ["--steps", "4", "--batch-size", "64", "--checkpoint-every", "0", "--quiet"]
    assert train_main([*train, "--out", str(out)]) == 0
    first = (out / "sae" / "sae_weights.safetensors").read_bytes()
    metrics = (out / "metrics.jsonl").read_text()
    capsys.readouterr()

    assert train_main([*train, "--seed", "1", "--out", str(out)]) == 2
    assert "already holds a training run" in one_error_line(capsys)
    assert (out / "sae" / "sae_weights.safetensors").read_bytes() == first
    assert (out / "metrics.jsonl").read_text() == metrics

    assert train_main([*train, "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert (out / "sae" / "sae_weights.safetensors").read_bytes() != first
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(metrics.splitlines())
    capsys.readouterr()

    (out / "notes.txt").write_text("mine")
    assert train_main([*train, "--out", str(out), "--overwrite"]) == 2
    assert "did not write (notes.txt)" in one_error_line(capsys)
    assert (out / "notes.txt").read_text() == "mine" and (out / "sae").is_dir()

    assert train_main([*train, "--out", str(clean)]) == 2
    assert "is an activation store" in one_error_line(capsys)


def test_sae_stats_refuses_a_store_foreign_files_and_earlier_tables(
    clean, sae_dir, tmp_path, capsys
):
    stats = ["--store", str(clean), "--hook", "layer_1", "--sae", str(sae_dir), "--no-ray"]
    assert stats_main([*stats, "--out", str(clean)]) == 2
    assert "is an activation store" in one_error_line(capsys)
    assert not (clean / "features.parquet").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "draft.md").write_text("mine")
    assert stats_main([*stats, "--out", str(foreign)]) == 2
    assert "did not write (draft.md)" in one_error_line(capsys)

    out = tmp_path / "stats"
    assert stats_main([*stats, "--out", str(out)]) == 0
    capsys.readouterr()
    assert stats_main([*stats, "--out", str(out)]) == 2
    assert "already holds feature tables" in one_error_line(capsys)
    assert stats_main([*stats, "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "examples.parquet",
        "features.parquet",
        "logits.parquet",
        "stats.json",
    ]


def test_integer_hooks_are_stored_under_the_layer_they_index(clean, tiny_gpt2_path, tmp_path):
    from pipeline.model import LanguageModel

    names = LanguageModel.from_pretrained(tiny_gpt2_path).layers.names()
    index = names.index("transformer.h.1")
    result = capture(
        capture_config(tiny_gpt2_path, tmp_path / "s", hooks=(index,), max_tokens=600),
        progress=False,
    )
    assert list(result.hooks) == ["transformer.h.1"]
    store = ActivationStore.open(result.path)
    np.testing.assert_allclose(
        store.read("transformer.h.1"),
        ActivationStore.open(clean).read("layer_1", slice(0, 600)),
        atol=1e-5,
    )
    assert json.loads((result.path / "store.json").read_text())["command"] is None


# --- corrupt files: one line naming the file, never unpickled ---------------------------


@pytest.mark.parametrize(
    "corrupt, named",
    [
        (lambda p: (p / "sae_weights.safetensors").write_bytes(b"\x80\x04K\x01."), "sae_weights"),
        (lambda p: (p / "sae_weights.safetensors").write_bytes(b"12345678"), "sae_weights"),
        (lambda p: (p / "cfg.json").write_text('{"d_in": 6'), "cfg.json"),
    ],
    ids=["pickle-renamed", "truncated-weights", "truncated-cfg"],
)
def test_a_corrupt_sae_file_is_one_line_naming_it(clean, sae_dir, tmp_path, capsys, corrupt, named):
    broken = tmp_path / "sae"
    shutil.copytree(sae_dir, broken)
    corrupt(broken)
    stats = ["--store", str(clean), "--hook", "layer_1", "--sae", str(broken), "--no-ray"]
    assert stats_main([*stats, "--out", str(tmp_path / "stats")]) == 2
    line = one_error_line(capsys)
    assert f"{broken}/{named}" in line and "not a valid" in line
    assert not (tmp_path / "stats").exists()


def test_a_corrupt_model_folder_is_one_line_naming_it(tiny_gpt2_path, tmp_path, capsys):
    from jobs.capture import main as capture_main

    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2_path, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    args = ["--no-ray", "--quiet", "--set", f"model={model}", "--out", str(tmp_path / "s")]
    assert capture_main(args) == 2
    line = one_error_line(capsys)
    assert f"the model folder {model} could not be loaded" in line


# --- the bad-input table of docs/reliability.md -------------------------------------------


def bad_input_cases(tmp: Path, model: Path, clean: Path, sae: Path) -> dict:
    """Each case: (job, arguments) -> a fragment of the one error line. `tmp` is empty."""
    (tmp / "file").write_text("x")
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("mine")
    (tmp / "tabs.yaml").write_text("hooks:\n\t- layer_1\n")
    (tmp / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    base = ["--no-ray", "--quiet", "--set", f"model={model}", "--set", "max_tokens=600"]
    base += ["--set", "hooks=[layer_1]"]
    out = ["--out", str(tmp / "new")]
    train = ["--hook", "layer_1", "--n-latents", "16", "--k", "2", "--steps", "2", "--quiet"]
    stats = ["--hook", "layer_1", "--no-ray", "--out", str(tmp / "stats")]
    return {
        "batch_size=true": ("capture", [*base, *out, "--set", "batch_size=true"], "batch_size must be an integer >= 1, got True"),
        "max_tokens=abc": ("capture", [*base, *out, "--set", "max_tokens=abc"], "max_tokens must be an integer >= 1 or null, got 'abc'"),
        "max_tokens=1500.5": ("capture", [*base, *out, "--set", "max_tokens=1500.5"], "got 1500.5 (float)"),
        "num_gpus_per_worker=abc": ("capture", [*base, *out, "--set", "ray.num_gpus_per_worker=abc"], "num_gpus_per_worker must be a number"),
        "a Ray setting at the top level": ("capture", [*base, *out, "--set", "num_workers=4"], "num_workers is a Ray setting: put it under ray: in the YAML, or --set ray.num_workers=4"),
        "unknown key": ("capture", [*base, *out, "--set", "batch=4"], "unknown config keys ['batch']"),
        "unknown layer": ("capture", [*base, *out, "--set", "hooks=[layer_9]"], "unknown layer 'layer_9'"),
        "context_length too long": ("capture", [*base, *out, "--set", "context_length=5000"], "exceeds the model's 256 positions"),
        "missing config file": ("capture", ["--config", str(tmp / "nope.yaml"), *out], "nope.yaml"),
        "config not YAML": ("capture", ["--config", str(tmp / "tabs.yaml"), *out], "tabs.yaml is not valid YAML"),
        "corpus path matches nothing": ("capture", [*base, *out, "--set", "corpus.kind=jsonl", "--set", f"corpus.path={tmp}/none/*.jsonl"], "matched no files"),
        "corpus line not JSON": ("capture", [*base, "--out", str(tmp / "planned"), "--set", "corpus.kind=jsonl", "--set", f"corpus.path={tmp}/bad.jsonl"], "bad.jsonl@17: line is not valid JSON"),
        "model folder missing": ("capture", [*base[:2], "--set", f"model={tmp}/nomodel", *out], "is not a Hugging Face model folder"),
        "out is a file": ("capture", [*base, "--out", str(tmp / "file")], "is a file"),
        "out under a file": ("capture", [*base, "--out", str(tmp / "file" / "s")], "is not a writable folder"),
        "out holds foreign files": ("capture", [*base, "--out", str(tmp / "foreign")], "holds ['notes.txt']"),
        "out is a store with another config": ("capture", [*base, "--set", "hooks=[layer_0]", "--out", str(clean)], "hooks: store has"),
        "train: not a store": ("train_sae", ["--store", str(tmp / "foreign"), *train, "--out", str(tmp / "t")], "is not an activation store"),
        "train: unknown hook": ("train_sae", ["--store", str(clean), *train[:0], "--hook", "layer_7", *train[2:], "--out", str(tmp / "t")], "hook 'layer_7' is not in the store"),
        "train: missing checkpoint": ("train_sae", ["--store", str(clean), *train, "--out", str(tmp / "t"), "--resume", str(tmp / "ckpt")], "not a checkpoint folder"),
        "stats: SAE width": ("sae_stats", ["--store", str(clean), "--sae", str(sae), *stats[:0], "--hook", "layer_1", "--no-ray", "--out", str(tmp / "stats2"), "--top-k", "0"], "--top-k must be >= 1"),
        "stats: missing SAE": ("sae_stats", ["--store", str(clean), "--sae", str(tmp / "nosae"), *stats], "is not an SAE folder"),
        "inspect: not a store": ("inspect", [str(tmp / "foreign")], "is not an activation store"),
    }  # fmt: skip


def test_every_bad_input_is_one_line_and_exit_2(clean, sae_dir, tiny_gpt2_path, tmp_path, capsys):
    from jobs.capture import main as capture_main

    mains = {"capture": capture_main, "train_sae": train_main, "sae_stats": stats_main}
    mains["inspect"] = inspect_main
    failures = []
    for name, (job, args, fragment) in bad_input_cases(
        tmp_path, tiny_gpt2_path, clean, sae_dir
    ).items():
        status = mains[job](args)
        err = capsys.readouterr().err.strip().splitlines()
        if status != 2 or len(err) != 1 or fragment not in err[0]:
            failures.append(f"{name}: exit {status}, stderr {err}")
    assert failures == [], "\n".join(failures)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "new").exists() and not (tmp_path / "t").exists()
    ActivationStore.open(clean).verify()


def test_an_unfinished_store_is_refused_with_the_command(clean, tmp_path, capsys):
    from jobs.intervene import main as intervene_main

    path = unfinish(clean, tmp_path / "s", keep=[0, 1, 2])
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"store: {path}\nout: {tmp_path / 'effects'}\n"
        "steps:\n  - {name: half, layer: layer_1, scale: 0.5}\n"
    )
    assert intervene_main(["--spec", str(spec), "--no-ray", "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "3 of 6 units committed" in line and "python -m jobs.capture" in line
    assert not (tmp_path / "effects").exists()
