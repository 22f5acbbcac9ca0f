"""Training ReLU (L1) and JumpReLU (L0) SAEs from a store: recovery, files, resuming, the job.

The store holds x = codes @ atoms with 4 of 64 random unit atoms per row. An SAE with 128
latents should find every atom (one latent's decoder row close to it) and explain most of
the variance of rows it has not seen. The atoms are drawn with another seed than the SAE's
initial weights, so the decoder does not start at the answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jobs.train_sae import main as train_main
from pipeline.sae import JumpReluSae, ReluSae, load_sae
from pipeline.sae.from_store import train_sae_from_store
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, checkpoint_step
from pipeline.store.writer import StoreWriter
from tests.store_helpers import planner_for, small_plan

D, NUM_ATOMS, K, HOOK = 32, 64, 4, "blocks.1"
SPARSITY = {
    "relu": {"l1_coefficient": 0.3},
    "jumprelu": {"l0_coefficient": 0.05, "bandwidth": 0.05, "threshold_init": 0.3},
}
SAE_CLASS = {"relu": ReluSae, "jumprelu": JumpReluSae}
# The data have K=4 atoms per row; an L1 penalty leaves more small codes than an L0 one.
L0_RANGE = {"relu": (K, 4 * K), "jumprelu": (3, 6)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def true_atoms() -> np.ndarray:
    atoms = np.random.default_rng(100).standard_normal((NUM_ATOMS, D))
    return (atoms / np.linalg.norm(atoms, axis=1, keepdims=True)).astype(np.float32)


def sparse_rows(num_rows: int, seed: int) -> np.ndarray:
    """x = codes @ atoms with K random atoms per row, magnitudes in [0.5, 1.5)."""
    generator = np.random.default_rng(seed)
    chosen = generator.random((num_rows, NUM_ATOMS)).argsort(1)[:, :K]
    codes = np.zeros((num_rows, NUM_ATOMS), dtype=np.float32)
    np.put_along_axis(codes, chosen, generator.random((num_rows, K)) + 0.5, axis=1)
    return codes @ true_atoms()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A real store (StoreWriter, about 9k rows) whose hook holds sparse synthetic rows."""
    path = tmp_path_factory.mktemp("sparse-store") / "s"
    plan = small_plan(num_docs=8, rows_per_unit=2000)
    writer = StoreWriter.create_or_open(
        path,
        {"model_id": "synthetic"},
        {HOOK: D},
        "float32",
        plan.config,
        planner_for(plan),
        fsync=False,
    )
    for unit in range(plan.num_units):
        start, stop = plan.unit_rows(unit)
        writer.write_unit(unit, {HOOK: sparse_rows(stop - start, seed=unit)})
    writer.finalize()
    return path


def recovery_config(architecture: str, **overrides) -> TrainerConfig:
    settings = {
        "n_latents": 2 * NUM_ATOMS,
        "architecture": architecture,
        "steps": 1000,
        "batch_size": 256,
        "lr": 1e-2,
        "buffer_size": 2048,
        "log_every": 100,
        **SPARSITY[architecture],
        **overrides,
    }
    return TrainerConfig(**settings)


@pytest.fixture(scope="module", params=["relu", "jumprelu"])
def trained(request, store_path, tmp_path_factory):
    """(architecture, trainer, run folder) after 1000 steps on the store."""
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    trainer = train_sae_from_store(
        store_path, HOOK, recovery_config(request.param), out_dir=out, progress=False
    )
    return request.param, trainer, out


def test_training_from_a_store_recovers_the_dictionary(trained):
    architecture, trainer, _ = trained
    assert trainer.step == 1000
    best_cosine = torch.from_numpy(true_atoms()) @ trainer.sae.W_dec.detach().T
    best_cosine = best_cosine.max(1).values
    assert best_cosine.mean() > 0.95, f"{architecture}: {best_cosine.mean():.3f}"
    assert (best_cosine > 0.9).float().mean() >= 0.9


def test_training_from_a_store_explains_the_variance_of_unseen_rows(trained):
    architecture, trainer, _ = trained
    x = torch.from_numpy(sparse_rows(4096, seed=999))
    with torch.no_grad():
        x_hat = trainer.sae(x)
    fve = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fve > 0.85, f"{architecture}: {fve:.3f}"


def test_the_penalty_makes_the_codes_sparse(trained):
    architecture, trainer, _ = trained
    with torch.no_grad():
        codes = trainer.sae.encode(torch.from_numpy(sparse_rows(4096, seed=999)))
    l0 = float((codes > 0).sum(1).float().mean())
    low, high = L0_RANGE[architecture]
    assert low <= l0 <= high, f"{architecture}: L0 {l0:.2f}"


def test_saved_sae_loads_back_as_its_class_and_encodes_identically(trained):
    architecture, trainer, out = trained
    loaded = load_sae(out / "sae")
    assert type(loaded) is SAE_CLASS[architecture]
    x = torch.from_numpy(sparse_rows(512, seed=7))
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), trainer.sae.encode(x))
        assert torch.equal(loaded(x), trainer.sae(x))
    cfg = json.loads((out / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "jumprelu": "jumprelu"}[architecture]


def test_metrics_log_records_fve_l0_dead_fraction_and_the_sparsity_loss(trained):
    _, _, out = trained
    lines = (out / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == list(range(100, 1001, 100))
    assert set(metrics[-1]) == {"step", "mse", "sparsity_loss", "fve", "l0", "dead_fraction"}
    assert metrics[-1]["fve"] > 0.8 and metrics[-1]["sparsity_loss"] > 0


@pytest.mark.parametrize("architecture", ["relu", "jumprelu"])
def test_resumed_trainer_takes_exactly_the_step_the_original_takes(tmp_path, architecture):
    config = recovery_config(architecture, steps=30, sparsity_warmup_steps=20)
    rows = [torch.from_numpy(sparse_rows(256, seed=seed)) for seed in range(12)]
    original = SaeTrainer(config, n_inputs=D)
    original.fit(rows[:10], progress=False)
    original.save_checkpoint(tmp_path / "ckpt")

    resumed = SaeTrainer.from_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 10 and checkpoint_step(tmp_path / "ckpt") == 10
    for batch in rows[10:]:
        expected, got = original.train_step(batch), resumed.train_step(batch)
        assert got == expected
    for name, param in original.sae.named_parameters():
        torch.testing.assert_close(
            dict(resumed.sae.named_parameters())[name], param, rtol=0, atol=0
        )


def test_resume_refuses_another_architecture(tmp_path):
    trainer = SaeTrainer(recovery_config("relu", steps=2), n_inputs=D)
    trainer.train_step(torch.from_numpy(sparse_rows(256, seed=0)))
    trainer.save_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="architecture='relu'"):
        SaeTrainer.from_checkpoint(tmp_path / "ckpt", recovery_config("jumprelu", steps=4))


@pytest.mark.parametrize(
    ("architecture", "flags"),
    [
        ("relu", ["--l1-coefficient", "0.3"]),
        (
            "jumprelu",
            ["--l0-coefficient", "0.05", "--bandwidth", "0.05", "--threshold-init", "0.3"],
        ),
    ],
)
def test_train_sae_job_trains_each_architecture_and_resumes(
    store_path, tmp_path, capsys, architecture, flags
):
    args = ["--store", str(store_path), "--hook", HOOK, "--n-latents", "64"]
    args += ["--architecture", architecture, *flags, "--batch-size", "128", "--lr", "3e-3"]
    args += ["--checkpoint-every", "15", "--quiet", "--out", str(tmp_path / "out")]
    assert train_main([*args, "--steps", "30"]) == 0
    assert "step 30" in capsys.readouterr().out
    sae = load_sae(tmp_path / "out" / "sae")
    assert type(sae) is SAE_CLASS[architecture] and (sae.n_inputs, sae.n_latents) == (D, 64)
    checkpoint = tmp_path / "out" / "checkpoints" / "step_00000015"
    assert train_main([*args, "--steps", "45", "--resume", str(checkpoint)]) == 0
    assert checkpoint_step(tmp_path / "out" / "checkpoints" / "step_00000045") == 45
    metrics = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics[-1]["step"] == 45 and metrics[-1]["fve"] > 0


def test_train_sae_job_names_the_missing_coefficient(store_path, tmp_path, capsys):
    args = ["--store", str(store_path), "--hook", HOOK, "--n-latents", "64", "--quiet"]
    status = train_main([*args, "--architecture", "jumprelu", "--out", str(tmp_path / "out")])
    assert status == 2 and "l0_coefficient" in capsys.readouterr().err
    status = train_main(
        [*args, "--architecture", "relu", "--l1-coefficient", "1", "--k", "4"]
        + ["--out", str(tmp_path / "out")]
    )
    assert status == 2 and "k is only for topk" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
