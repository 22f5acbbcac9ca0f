"""Training a TopK SAE: dictionary recovery on synthetic data, the pieces of a step, the buffer."""

from __future__ import annotations

import pytest
import torch

from pipeline.sae.buffer import mixing_buffer
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, geometric_median, train_sae

D, NUM_ATOMS, K = 32, 128, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def true_dictionary(seed: int = 0) -> torch.Tensor:
    atoms = torch.randn(NUM_ATOMS, D, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=1, keepdim=True)


def sparse_chunks(atoms: torch.Tensor, num_chunks: int, rows: int = 1024, seed: int = 1):
    """x = codes @ atoms with K random atoms per row, magnitudes in [0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(num_chunks):
        chosen = torch.rand(rows, NUM_ATOMS, generator=generator).argsort(1)[:, :K]
        codes = torch.zeros(rows, NUM_ATOMS).scatter_(
            1, chosen, torch.rand(rows, K, generator=generator) + 0.5
        )
        yield (codes @ atoms).numpy()


def test_training_on_sparse_synthetic_data_recovers_the_dictionary():
    atoms = true_dictionary(seed=1234)  # another seed than the SAE's own initialisation
    config = TrainerConfig(
        n_latents=2 * NUM_ATOMS,
        k=K,
        steps=400,
        batch_size=256,
        lr=3e-3,
        buffer_size=2048,
        dead_after_tokens=20_000,
    )
    start = SaeTrainer(config, n_inputs=D).sae.W_dec.detach()
    assert (atoms @ start.T).max(1).values.mean() < 0.6, "the answer must not be the start"
    trainer = train_sae(sparse_chunks(atoms, 200), config, n_inputs=D, progress=False)
    assert trainer.step == 400
    learned = trainer.sae.W_dec.detach()
    cosine = atoms @ learned.T
    assert cosine.max(1).values.mean() > 0.9
    torch.testing.assert_close(learned.norm(dim=1), torch.ones(2 * NUM_ATOMS))


def test_step_metrics_report_mse_variance_explained_l0_and_dead_fraction():
    trainer = SaeTrainer(
        TrainerConfig(n_latents=64, k=3, batch_size=32, buffer_size=64), n_inputs=8
    )
    metrics = trainer.train_step(torch.randn(32, 8))
    assert set(metrics) == {"step", "mse", "aux_loss", "fve", "l0", "dead_fraction"}
    assert metrics["step"] == 1 and metrics["l0"] <= 3 and metrics["mse"] > 0


def test_b_dec_starts_at_the_first_batch_mean():
    trainer = SaeTrainer(
        TrainerConfig(n_latents=16, k=2, lr=1e-7, batch_size=8, buffer_size=16), n_inputs=4
    )
    x = torch.randn(64, 4) + torch.tensor([5.0, -3.0, 0.0, 1.0])
    trainer.train_step(x)
    torch.testing.assert_close(trainer.sae.b_dec.detach(), x.mean(0), atol=1e-4, rtol=0)


def test_geometric_median_ignores_an_outlier():
    points = torch.cat([torch.randn(99, 3) * 0.01, torch.tensor([[1000.0, 1000.0, 1000.0]])])
    assert geometric_median(points).abs().max() < 0.1


@pytest.mark.parametrize("aux_coef", [0.0, 1 / 32])
def test_auxk_loss_gives_dead_latents_a_gradient(aux_coef):
    config = TrainerConfig(
        n_latents=64,
        k=2,
        batch_size=4,
        buffer_size=8,
        dead_after_tokens=100,
        aux_coef=aux_coef,
        b_dec_init="zeros",
    )
    trainer = SaeTrainer(config, n_inputs=8)
    trainer.tokens_since_fired_F.fill_(1000)  # every latent is dead until it fires
    x = torch.randn(4, 8)
    before = trainer.sae.W_enc.detach().clone()
    with torch.no_grad():
        fired = trainer.sae.encode_sparse(x)[1].unique()
    metrics = trainer.train_step(x)
    assert metrics["dead_fraction"] >= (64 - 8) / 64
    changed = (trainer.sae.W_enc.detach() != before).any(0)
    dead_changed = changed.clone()
    dead_changed[fired] = False
    assert bool(dead_changed.any()) == (aux_coef > 0)
    assert (metrics["aux_loss"] > 0) == (aux_coef > 0)


def test_trainer_config_names_the_bad_field():
    with pytest.raises(ValueError, match="buffer_size"):
        TrainerConfig(n_latents=8, k=2, batch_size=64, buffer_size=100)
    with pytest.raises(ValueError, match="b_dec_init"):
        TrainerConfig(n_latents=8, k=2, b_dec_init="median")


def test_mixing_buffer_serves_every_row_once_shuffled_in_full_batches():
    chunks = [torch.arange(i * 100, (i + 1) * 100, dtype=torch.float32)[:, None] for i in range(10)]
    batches = list(mixing_buffer(chunks, buffer_size=200, batch_size=25, seed=0))
    assert all(b.shape == (25, 1) for b in batches)
    served = torch.cat(batches).flatten()
    assert torch.equal(served.sort().values, torch.arange(1000, dtype=torch.float32))
    assert not torch.equal(served, torch.arange(1000, dtype=torch.float32))


def test_mixing_buffer_mixes_rows_across_chunks():
    chunks = [torch.full((100, 1), float(i)) for i in range(6)]
    first = next(iter(mixing_buffer(chunks, buffer_size=400, batch_size=100, seed=0)))
    assert len(first.unique()) == 4  # the first batch draws from all four chunks buffered so far


def test_a_latent_that_never_fired_is_dead_before_the_window_has_passed():
    config = TrainerConfig(n_latents=16, k=2, batch_size=8, buffer_size=16, b_dec_init="zeros")
    trainer = SaeTrainer(config, n_inputs=4)
    assert config.dead_after_tokens > 10 * 8  # the window is longer than the whole run
    with torch.no_grad():
        trainer.sae.W_enc[:, 0] = 0.0  # latent 0 never reaches the top k
        trainer.sae.b_enc[0] = -100.0
    for _ in range(10):
        metrics = trainer.train_step(torch.randn(8, 4))
    assert trainer.dead_window == trainer.rows_seen == 80
    assert int(trainer.tokens_since_fired_F[0]) == 80
    assert metrics["dead_fraction"] >= 1 / 16


def test_a_latent_that_fired_within_the_rows_seen_is_not_dead():
    trainer = SaeTrainer(
        TrainerConfig(n_latents=4, k=4, batch_size=8, buffer_size=16, lr=1e-7), n_inputs=4
    )
    with torch.no_grad():
        trainer.sae.b_enc.fill_(100.0)  # every latent fires on every row
    metrics = trainer.train_step(torch.randn(8, 4))
    assert metrics["dead_fraction"] == 0


def test_dead_window_is_the_configured_window_once_more_rows_were_seen():
    config = TrainerConfig(
        n_latents=8, k=2, batch_size=8, buffer_size=16, dead_after_tokens=20, b_dec_init="zeros"
    )
    trainer = SaeTrainer(config, n_inputs=4)
    for _ in range(5):
        trainer.train_step(torch.randn(8, 4))
    assert trainer.rows_seen == 40 and trainer.dead_window == 20


def test_fit_prints_the_dead_window_and_a_line_per_tenth_of_the_steps_off_a_terminal(capsys):
    config = TrainerConfig(n_latents=16, k=2, steps=20, batch_size=8, buffer_size=16)
    trainer = SaeTrainer(config, n_inputs=4)
    trainer.fit((torch.randn(8, 4) for _ in range(30)), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "dead latents: not fired in the last 10,000,000 rows (or all rows seen, if fewer)"
    )
    steps = [line for line in lines[1:] if line.startswith("train SAE: step ")]
    assert len(steps) == len(lines) - 1 == 10
    assert steps[0].startswith("train SAE: step 2/20 (10%) mse ")
    assert steps[-1].startswith("train SAE: step 20/20 (100%) mse ")
    assert all(" fve " in line and " l0 " in line and " dead " in line for line in steps)


def test_fit_without_progress_prints_nothing(capsys):
    config = TrainerConfig(n_latents=16, k=2, steps=5, batch_size=8, buffer_size=16)
    SaeTrainer(config, n_inputs=4).fit((torch.randn(8, 4) for _ in range(5)), progress=False)
    assert capsys.readouterr().err == ""
