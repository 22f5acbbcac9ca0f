"""Training ReLU (L1) and JumpReLU (L0) SAEs: configs, one step, the warm-up, the threshold."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.sae import JumpReluSae, ReluSae, TopKSae
from pipeline.sae.trainer import SaeTrainer, TrainerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"n_latents": 32, "batch_size": 16, "buffer_size": 32}


def relu_config(**overrides) -> TrainerConfig:
    return TrainerConfig(**{**SMALL, "architecture": "relu", "l1_coefficient": 0.1, **overrides})


def jumprelu_config(**overrides) -> TrainerConfig:
    settings = {**SMALL, "architecture": "jumprelu", "l0_coefficient": 0.1, **overrides}
    return TrainerConfig(**settings)


def test_architecture_defaults_to_topk_and_builds_the_matching_sae():
    assert TrainerConfig(n_latents=8, k=2).architecture == "topk"
    assert isinstance(SaeTrainer(TrainerConfig(**SMALL, k=2), n_inputs=4).sae, TopKSae)
    assert type(SaeTrainer(relu_config(), n_inputs=4).sae) is ReluSae
    assert type(SaeTrainer(jumprelu_config(), n_inputs=4).sae) is JumpReluSae


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": "relu"}, "l1_coefficient must be a number >= 0 for a relu SAE"),
        ({"architecture": "jumprelu"}, "l0_coefficient must be a number >= 0"),
        ({"architecture": "topk"}, "k must be a positive int"),
        ({"architecture": "relu", "l1_coefficient": 1.0, "k": 4}, "k is only for topk"),
        ({"architecture": "topk", "k": 4, "l1_coefficient": 1.0}, "l1_coefficient is only for"),
        ({"architecture": "relu", "l1_coefficient": 1.0, "l0_coefficient": 1.0}, "l0_coeff"),
        ({"architecture": "relu", "l1_coefficient": -1.0}, "l1_coefficient"),
        ({"architecture": "standard", "l1_coefficient": 1.0}, "'standard' is called 'relu'"),
        ({"architecture": "gated"}, "architecture must be one of topk, relu, jumprelu"),
        ({"architecture": "jumprelu", "l0_coefficient": 1.0, "bandwidth": 0.0}, "bandwidth"),
        ({"architecture": "jumprelu", "l0_coefficient": 1, "threshold_init": -1}, "threshold_"),
        ({"k": 2, "sparsity_warmup_steps": -1}, "sparsity_warmup_steps"),
    ],
)
def test_trainer_config_names_the_field_that_does_not_fit_the_architecture(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(n_latents=8, **fields)


def test_a_saved_config_from_before_architectures_existed_is_a_topk_config():
    saved = dataclasses.asdict(TrainerConfig(n_latents=8, k=2))
    for name in ("architecture", "l1_coefficient", "l0_coefficient", "bandwidth"):
        saved.pop(name)
    for name in ("threshold_init", "sparsity_warmup_steps"):
        saved.pop(name)
    assert TrainerConfig(**saved) == TrainerConfig(n_latents=8, k=2, architecture="topk")


@pytest.mark.parametrize("make_config", [relu_config, jumprelu_config])
def test_step_metrics_report_mse_variance_explained_measured_l0_and_sparsity_loss(make_config):
    trainer = SaeTrainer(make_config(), n_inputs=8)
    x = torch.randn(16, 8)
    with torch.no_grad():
        trainer._init_b_dec(x)
        expected_l0 = (trainer.sae.encode(x) > 0).sum(1).float().mean()
    metrics = trainer.train_step(x)
    assert set(metrics) == {"step", "mse", "sparsity_loss", "fve", "l0", "dead_fraction"}
    assert metrics["step"] == 1 and metrics["mse"] > 0 and metrics["sparsity_loss"] > 0
    assert metrics["l0"] == pytest.approx(float(expected_l0))


def test_relu_step_keeps_decoder_rows_unit_norm():
    trainer = SaeTrainer(relu_config(lr=1e-2), n_inputs=8)
    for _ in range(3):
        trainer.train_step(torch.randn(16, 8) * 3)
    torch.testing.assert_close(trainer.sae.W_dec.detach().norm(dim=1), torch.ones(32))


def test_jumprelu_thresholds_start_at_threshold_init_and_are_trained():
    trainer = SaeTrainer(jumprelu_config(threshold_init=0.2, bandwidth=0.5), n_inputs=8)
    assert torch.equal(trainer.sae.threshold.detach(), torch.full((32,), 0.2))
    trainer.train_step(torch.randn(16, 8))
    assert not torch.equal(trainer.sae.threshold.detach(), torch.full((32,), 0.2))


def test_jumprelu_thresholds_stay_non_negative():
    config = jumprelu_config(l0_coefficient=0.0, threshold_init=0.05, lr=0.5, bandwidth=10.0)
    trainer = SaeTrainer(config, n_inputs=8)
    for _ in range(5):
        trainer.train_step(torch.randn(16, 8))
    assert bool((trainer.sae.threshold >= 0).all())


def test_a_larger_l0_coefficient_gives_higher_thresholds():
    def thresholds_after_steps(coefficient: float) -> torch.Tensor:
        trainer = SaeTrainer(
            jumprelu_config(l0_coefficient=coefficient, threshold_init=0.1, bandwidth=1.0),
            n_inputs=8,
        )
        for seed in range(5):
            trainer.train_step(torch.randn(16, 8, generator=torch.Generator().manual_seed(seed)))
        return trainer.sae.threshold.detach()

    assert thresholds_after_steps(10.0).mean() > thresholds_after_steps(0.0).mean()


def test_sparsity_coefficient_ramps_up_linearly_over_the_warmup():
    trainer = SaeTrainer(relu_config(l1_coefficient=2.0, sparsity_warmup_steps=4), n_inputs=8)
    ramp = []
    for _ in range(6):
        ramp.append(trainer.sparsity_coefficient)
        trainer.step += 1
    assert ramp == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert SaeTrainer(relu_config(l1_coefficient=2.0), n_inputs=8).sparsity_coefficient == 2.0
