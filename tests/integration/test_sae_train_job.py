"""Training on disk: checkpoints, resuming, and `python -m jobs.train_sae` on a real store."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from jobs.train_sae import main as train_main
from pipeline.sae import TopKSae, load_sae
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, checkpoint_step, train_sae
from pipeline.store.writer import StoreWriter
from tests.store_helpers import planner_for, small_plan

D = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_chunks(num_chunks: int = 100, rows: int = 256, seed: int = 0):
    generator = np.random.default_rng(seed)
    for _ in range(num_chunks):
        yield generator.standard_normal((rows, D)).astype(np.float32)


def config(steps: int) -> TrainerConfig:
    return TrainerConfig(
        n_latents=48, k=4, steps=steps, batch_size=64, buffer_size=512, checkpoint_every=10, lr=1e-3
    )


def test_checkpoint_holds_the_sae_and_the_optimizer_state(tmp_path):
    trainer = train_sae(random_chunks(), config(20), n_inputs=D, out_dir=tmp_path, progress=False)
    folder = tmp_path / "checkpoints" / "step_00000010"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cfg.json",
        "sae_weights.safetensors",
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    assert checkpoint_step(folder) == 10
    assert isinstance(load_sae(tmp_path / "sae"), TopKSae)
    final = load_sae(tmp_path / "sae")
    assert all(
        torch.equal(a, b)
        for a, b in zip(final.state_dict().values(), trainer.sae.state_dict().values(), strict=True)
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 20


def test_resume_continues_from_the_saved_step_with_the_saved_state(tmp_path):
    train_sae(random_chunks(), config(20), n_inputs=D, out_dir=tmp_path / "run", progress=False)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000010"
    saved = load_sae(checkpoint)

    resumed = SaeTrainer.from_checkpoint(checkpoint, config(30))
    assert resumed.step == 10 and resumed.b_dec_ready
    assert all(
        torch.equal(a, b)
        for a, b in zip(resumed.sae.state_dict().values(), saved.state_dict().values(), strict=True)
    )
    steps = {int(state["step"]) for state in resumed.optimizer.state.values()}
    assert steps == {10}

    trainer = train_sae(
        random_chunks(seed=1),
        config(30),
        out_dir=tmp_path / "run",
        resume=checkpoint,
        progress=False,
    )
    assert trainer.step == 30
    assert {int(state["step"]) for state in trainer.optimizer.state.values()} == {30}
    assert checkpoint_step(tmp_path / "run" / "checkpoints" / "step_00000030") == 30


def test_resume_refuses_a_different_sae_shape(tmp_path):
    train_sae(random_chunks(), config(10), n_inputs=D, out_dir=tmp_path, progress=False)
    other = TrainerConfig(n_latents=96, k=4, batch_size=64, buffer_size=512)
    with pytest.raises(ValueError, match="n_latents=48"):
        SaeTrainer.from_checkpoint(tmp_path / "checkpoints" / "step_00000010", other)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A real store (StoreWriter) whose hook `blocks.1` holds sparse synthetic rows."""
    path = tmp_path_factory.mktemp("sae-store") / "s"
    plan = small_plan(num_docs=2, rows_per_unit=200)
    writer = StoreWriter.create_or_open(
        path,
        {"model": "synthetic", "hooks_resolved": {"blocks.1": "transformer.h.1"}},
        {"blocks.1": D},
        "float32",
        plan.config,
        planner_for(plan),
        fsync=False,
    )
    generator = np.random.default_rng(0)
    atoms = generator.standard_normal((32, D)).astype(np.float32)
    for unit in range(plan.num_units):
        start, stop = plan.unit_rows(unit)
        codes = generator.random((stop - start, 32)).astype(np.float32) * (
            generator.random((stop - start, 32)) < 0.1
        )
        writer.write_unit(unit, {"blocks.1": codes @ atoms})
    writer.finalize()
    return path


def test_train_sae_job_trains_on_a_store_and_resumes(store_path, tmp_path, capsys):
    args = ["--store", str(store_path), "--hook", "blocks.1", "--n-latents", "32", "--k", "3"]
    args += ["--batch-size", "128", "--lr", "1e-3", "--checkpoint-every", "15", "--quiet"]
    assert train_main([*args, "--steps", "30", "--out", str(tmp_path / "out")]) == 0
    assert "step 30" in capsys.readouterr().out
    sae = load_sae(tmp_path / "out" / "sae")
    assert (sae.n_inputs, sae.n_latents, sae.k) == (D, 32, 3)
    checkpoint = tmp_path / "out" / "checkpoints" / "step_00000015"
    assert (
        train_main(
            [*args, "--steps", "45", "--out", str(tmp_path / "out"), "--resume", str(checkpoint)]
        )
        == 0
    )
    assert checkpoint_step(tmp_path / "out" / "checkpoints" / "step_00000045") == 45
    metrics = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics[-1]["step"] == 45 and metrics[-1]["fve"] > 0


def test_train_sae_job_names_the_store_hooks_for_an_unknown_hook(store_path, tmp_path, capsys):
    status = train_main(
        [
            "--store",
            str(store_path),
            "--hook",
            "blocks.2",
            "--n-latents",
            "8",
            "--k",
            "2",
            "--quiet",
        ]
    )
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "hook 'blocks.2' is not in the store" in error[0]
    assert "closest: blocks.1" in error[0]


def test_trained_sae_records_where_its_rows_came_from(store_path, tmp_path):
    args = ["--store", str(store_path), "--hook", "blocks.1", "--n-latents", "32", "--k", "3"]
    args += ["--batch-size", "128", "--steps", "5", "--out", str(tmp_path / "out"), "--quiet"]
    assert train_main(args) == 0
    cfg = json.loads((tmp_path / "out" / "sae" / "cfg.json").read_text())
    metadata = cfg["metadata"]
    store_json = json.loads((store_path / "store.json").read_text())
    digest = hashlib.sha256(
        json.dumps(store_json["fingerprint"], sort_keys=True).encode()
    ).hexdigest()
    assert metadata["model"] == "synthetic"
    assert metadata["hook"] == "blocks.1" and metadata["hook_resolved"] == "transformer.h.1"
    assert metadata["store"] == str(store_path.resolve())
    assert metadata["store_plan_fingerprint"] == store_json["plan_fingerprint"]
    assert metadata["store_fingerprint_sha256"] == digest
    assert metadata["rows_trained"] == 5 * 128
    assert metadata["trainer_config"]["n_latents"] == 32
    assert metadata["trainer_config"]["batch_size"] == 128
    assert isinstance(load_sae(tmp_path / "out" / "sae"), TopKSae)


def test_train_sae_job_warns_when_it_reads_the_rows_over_ten_times(store_path, tmp_path, capsys):
    num_rows = json.loads((store_path / "store.json").read_text())["num_rows"]
    steps = 11 * num_rows // 128 + 1
    args = ["--store", str(store_path), "--hook", "blocks.1", "--n-latents", "8", "--k", "2"]
    args += ["--batch-size", "128", "--steps", str(steps), "--out", str(tmp_path / "out")]
    args += ["--quiet", "--checkpoint-every", "0"]
    assert train_main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "passes" in line]
    assert len(warnings) == 1
    assert f"over the store's {num_rows:,} rows" in warnings[0]
    assert f"{steps:,} steps x batch size 128" in warnings[0]


def test_train_sae_job_does_not_warn_within_ten_passes(store_path, tmp_path, capsys):
    args = ["--store", str(store_path), "--hook", "blocks.1", "--n-latents", "8", "--k", "2"]
    args += ["--batch-size", "128", "--steps", "2", "--out", str(tmp_path / "out"), "--quiet"]
    assert train_main(args) == 0
    assert "passes" not in capsys.readouterr().err
