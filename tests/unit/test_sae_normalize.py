"""Training on rescaled activations, and the rescaling folded back into the saved SAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.sae import load_sae
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, train_sae
from tests.unit.test_sae_trainer import NUM_ATOMS, D, K, sparse_chunks, true_dictionary

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCALE = 80.0  # raw activations far from unit scale, like a deep residual stream


@pytest.mark.parametrize("architecture", ["topk", "relu", "jumprelu"])
def test_the_folded_sae_reads_raw_rows_as_the_trained_one_reads_scaled_rows(architecture):
    sparsity = {
        "topk": {"k": K},
        "relu": {"l1_coefficient": 0.1},
        "jumprelu": {"l0_coefficient": 0.1},
    }
    config = TrainerConfig(
        n_latents=64,
        architecture=architecture,
        batch_size=256,
        buffer_size=512,
        normalize_activations=True,
        **sparsity[architecture],
    )
    trainer = SaeTrainer(config, n_inputs=D)
    x = torch.from_numpy(next(sparse_chunks(true_dictionary(), 1, rows=256))) * SCALE
    for _ in range(5):
        trainer.train_step(x)
    expected_scale = (D / x.double().pow(2).sum(1).mean()) ** 0.5
    assert trainer.input_scale == pytest.approx(float(expected_scale), rel=1e-6)
    folded = trainer.sae_for_raw_inputs()
    with torch.no_grad():
        scaled = x * trainer.input_scale
        torch.testing.assert_close(
            folded.encode(x), trainer.sae.encode(scaled), rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            folded(x), trainer.sae(scaled) / trainer.input_scale, rtol=1e-4, atol=1e-4
        )


def relu_run(scale: float, normalize: bool, out=None):
    """An L1-trained SAE on the synthetic rows times `scale`: (FVE, L0) of the saved SAE
    on held-out raw rows, and the trainer."""
    atoms = true_dictionary(seed=1234)
    config = TrainerConfig(
        n_latents=NUM_ATOMS,
        architecture="relu",
        l1_coefficient=0.3,
        steps=300,
        batch_size=256,
        lr=1e-2,
        buffer_size=2048,
        normalize_activations=normalize,
        checkpoint_every=100,
    )
    chunks = (chunk * scale for chunk in sparse_chunks(atoms, 100))
    trainer = train_sae(chunks, config, n_inputs=D, out_dir=out, progress=False)
    sae = load_sae(out / "sae") if out is not None else trainer.sae_for_raw_inputs()
    x = torch.from_numpy(next(sparse_chunks(atoms, 1, rows=512, seed=7))) * scale
    with torch.no_grad():
        fve = 1 - (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        l0 = (sae.encode(x) > 0).sum(1).float().mean()
    return float(fve), float(l0), trainer


def test_with_normalisation_an_l1_coefficient_means_the_same_at_any_scale(tmp_path):
    """Without it the same coefficient is 80x weaker on 80x larger rows (codes go dense)."""
    fve_1, l0_1, _ = relu_run(1.0, normalize=True)
    fve_80, l0_80, trainer = relu_run(SCALE, normalize=True, out=tmp_path / "run")
    assert abs(fve_80 - fve_1) < 0.01 and abs(l0_80 - l0_1) < 1.0
    _, l0_raw_1, _ = relu_run(1.0, normalize=False)
    _, l0_raw_80, _ = relu_run(SCALE, normalize=False)
    assert l0_raw_80 > l0_raw_1 + 10, "the problem the option solves"
    resumed = SaeTrainer.from_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000100")
    assert resumed.input_scale == trainer.input_scale
    assert np.isfinite(trainer.input_scale) and trainer.input_scale < 1 / 10
