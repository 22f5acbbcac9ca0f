"""Single-process capture: alignment with a plain forward pass, resume, refusal, failures."""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import LanguageModel, LayerActivationDetector
from pipeline.capture import CaptureConfig, capture
from pipeline.store.corpus import CorpusConfig
from pipeline.store.meta import StoreMismatchError
from pipeline.store.reader import ActivationStore, UnfinishedStoreError
from tests.helpers import capture_config, leftover_temp_files, store_arrays_equal

REPO = Path(__file__).resolve().parents[2]


tiny_config = capture_config


def test_minilm_store_rows_equal_a_plain_forward_pass(minilm_path, tmp_path):
    config = CaptureConfig(
        hooks=("layer_1", "layer_4"),
        dtype="float32",
        context_length=96,
        rows_per_unit=700,
        max_tokens=2500,
        out=str(tmp_path / "store"),
    )
    result = capture(config, progress=False)
    store = ActivationStore.open(result.path)
    store.verify()
    tokens = store.tokens().to_pandas()
    assert len(tokens) == store.num_rows == 2500
    lm = LanguageModel.from_pretrained(minilm_path)
    detectors = {hook: LayerActivationDetector(hook) for hook in config.hooks}
    # Windows 0, one straddling a unit boundary (rows 700), and the last (cut by max_tokens).
    straddling = int(tokens.loc[tokens.row == 700, "window"].iloc[0])
    for window in sorted({0, straddling, int(tokens.window.max())}):
        rows = tokens[tokens.window == window]
        ids = torch.tensor(rows.token_id.to_numpy(), dtype=torch.long)[None]
        with lm.layers.hooks(*detectors.values()):
            lm.inference.forward_ids(ids, torch.ones_like(ids))
        for hook, detector in detectors.items():
            expected = detector.get_captured()[0].numpy()
            got = store.read(hook, rows.row.to_numpy())
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    first = tokens[tokens.window == 0]
    assert first.token.iloc[0] == "[CLS]" and bool(first.is_special.iloc[0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_stores_read_back_as_float32(tiny_gpt2_path, tmp_path, dtype):
    full = capture(tiny_config(tiny_gpt2_path, tmp_path / "f32"), progress=False)
    half = capture(tiny_config(tiny_gpt2_path, tmp_path / dtype, dtype=dtype), progress=False)
    a = ActivationStore.open(full.path).read("layer_2", slice(0, 1000))
    b = ActivationStore.open(half.path).read("layer_2", slice(0, 1000))
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=1e-2 if dtype == "float16" else 1e-2 * 8, atol=1e-2)
    assert ActivationStore.open(half.path).activations("layer_2").attrs["logical_dtype"] == dtype


def test_rerun_of_finished_store_computes_nothing(tiny_gpt2_path, tmp_path):
    config = tiny_config(tiny_gpt2_path, tmp_path / "s")
    first = capture(config, progress=False)
    again = capture(config, progress=False)
    assert first.units_computed == first.num_units and again.units_computed == 0


def run_capture_subprocess(
    config_args: list[str], check: bool = True, faults: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TRANSFORMERS_VERBOSITY": "error"}
    if faults is not None:
        env["PIPELINE_FAULTS"] = json.dumps(faults)
    command = [sys.executable, "-m", "jobs.capture", "--no-ray", "--quiet", *config_args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=check)


def subprocess_args(model, out, extra=()) -> list[str]:
    sets = [
        f"model={model}",
        "hooks=[layer_1, layer_3]",
        "dtype=float16",
        "context_length=64",
        "rows_per_unit=512",
        "max_tokens=4000",
        "batch_size=2",
        "torch_threads=1",
    ]
    return [arg for s in [*sets, *extra] for arg in ("--set", s)] + ["--out", str(out)]


def test_sigkill_mid_unit_then_rerun_equals_clean_run(tiny_gpt2_path, tmp_path):
    clean = tmp_path / "clean"
    run_capture_subprocess(subprocess_args(tiny_gpt2_path, clean))
    killed = tmp_path / "killed"
    fault = {"kill_unit": 3, "after_batches": 2, "once": str(tmp_path / "killed-once")}
    died = run_capture_subprocess(subprocess_args(tiny_gpt2_path, killed), False, fault)
    assert died.returncode == -9, died.stderr[-2000:]
    records_before = {p.name: p.read_text() for p in (killed / "units").glob("*.json")}
    # Unit 2 may still have been writing while unit 3 computed (the two overlap).
    assert sorted(records_before) in ([f"unit-{u:05d}.json" for u in range(n)] for n in (2, 3))
    assert not (killed / "_SUCCESS").exists()
    command = json.loads((killed / "store.json").read_text())["command"]
    with pytest.raises(UnfinishedStoreError, match="units committed") as info:
        ActivationStore.open(killed).read("layer_1", slice(0, 10))
    assert command in str(info.value) and command.startswith("python -m jobs.capture --set")

    # The command the store records finishes it, from any working directory.
    python, *words = shlex.split(command)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("PIPELINE_FAULTS", None)
    finished = subprocess.run(
        [sys.executable, *words, "--quiet", "--no-ray"], cwd=tmp_path, env=env, capture_output=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert store_arrays_equal(clean, killed)
    assert leftover_temp_files(killed) == []
    for name, text in records_before.items():  # committed units were not recomputed
        assert (killed / "units" / name).read_text() == text
    ActivationStore.open(killed).verify()


def test_different_config_is_refused_naming_fields(tiny_gpt2_path, tmp_path):
    config = tiny_config(tiny_gpt2_path, tmp_path / "s")
    capture(config, progress=False)
    with pytest.raises(StoreMismatchError) as info:
        capture(replace(config, hooks=("layer_0",), context_length=32), progress=False)
    message = str(info.value)
    assert "hooks" in message and "context_length" in message and "--overwrite" in message
    assert ActivationStore.open(config.out).hooks == ["layer_1", "layer_2"]
    replaced = capture(replace(config, hooks=("layer_0",), overwrite=True), progress=False)
    assert list(replaced.hooks) == ["layer_0"]


def test_write_failure_commits_nothing_and_rerun_completes(tiny_gpt2_path, tmp_path, monkeypatch):
    import pipeline.store.writer as writer_module

    config = tiny_config(tiny_gpt2_path, tmp_path / "s")
    real_write_array = writer_module.StoreWriter._write_array

    def full_disk(self, name, unit, start, stop, data_RD):
        if unit == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_array(self, name, unit, start, stop, data_RD)

    monkeypatch.setattr(writer_module.StoreWriter, "_write_array", full_disk)
    with pytest.raises(OSError, match="unit 1.*No space left"):
        capture(config, progress=False)
    committed = sorted(p.name for p in (tmp_path / "s" / "units").glob("*.json"))
    assert "unit-00001.json" not in committed and "unit-00000.json" in committed
    assert not (tmp_path / "s" / "_SUCCESS").exists()
    monkeypatch.setattr(writer_module.StoreWriter, "_write_array", real_write_array)
    result = capture(config, progress=False)
    assert result.units_computed == result.num_units - len(committed)
    ActivationStore.open(result.path).verify()
    assert leftover_temp_files(result.path) == []


def test_unknown_hook_fails_before_any_store_is_written(tiny_gpt2_path, tmp_path):
    with pytest.raises(ValueError, match="closest names"):
        capture(
            tiny_config(tiny_gpt2_path, tmp_path / "s", hooks=("transformer.h.1.mlpp",)),
            progress=False,
        )
    assert not (tmp_path / "s").exists()


def test_store_path_that_is_a_file_is_refused(tiny_gpt2_path, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("precious")
    with pytest.raises(ValueError, match="is a file"):
        capture(tiny_config(tiny_gpt2_path, target), progress=False)
    assert target.read_text() == "precious"


def test_corpus_without_tokens_is_a_clear_error(tiny_gpt2_path, tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in ["", "   ", "\n"]))
    config = tiny_config(
        tiny_gpt2_path, tmp_path / "s", corpus=CorpusConfig(kind="jsonl", path=str(corpus))
    )
    with pytest.raises(ValueError, match="no tokens"):
        capture(config, progress=False)


def test_unsupported_model_dtype_is_a_clear_error(tiny_gpt2_path, tmp_path):
    with pytest.raises(ValueError, match="model_dtype must be one of"):
        tiny_config(tiny_gpt2_path, tmp_path / "s", model_dtype="float64")


def test_context_longer_than_model_positions_is_refused(tiny_gpt2_path, tmp_path):
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        capture(tiny_config(tiny_gpt2_path, tmp_path / "s", context_length=1024), progress=False)


def test_document_mode_keeps_every_document_token(tiny_gpt2_path, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    texts = ["short one", "a somewhat longer document " * 20, "", "last"]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    config = tiny_config(
        tiny_gpt2_path,
        tmp_path / "s",
        corpus=CorpusConfig(kind="jsonl", path=str(corpus)),
        mode="document",
        max_tokens=None,
        rows_per_unit=64,
    )
    result = capture(config, progress=False)
    store = ActivationStore.open(result.path)
    tokens = store.tokens().to_pandas()
    assert sorted(tokens.doc_id.unique()) == [0, 1, 3]
    assert tokens.groupby("window").doc_id.nunique().max() == 1
    assert store.meta["plan"]["num_skipped_empty"] == 1
