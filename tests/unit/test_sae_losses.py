"""The sparsity terms: JumpReLU's straight-through gradients, the L1 and L0 penalties, AuxK."""

from __future__ import annotations

import torch

from pipeline.sae.losses import auxk_loss, jumprelu, l0_penalty, l1_penalty, rectangle, step

BANDWIDTH = 0.1


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def test_rectangle_is_one_strictly_inside_minus_half_to_half():
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.6])
    assert rectangle(u).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_jumprelu_keeps_values_above_the_threshold_and_zeroes_the_rest():
    z = torch.tensor([[0.1, 0.5, 0.9], [0.45, 0.55, 0.0]])
    threshold = torch.tensor([0.2, 0.5, 0.5])
    expected = torch.tensor([[0.0, 0.0, 0.9], [0.45, 0.55, 0.0]])
    assert torch.equal(jumprelu(z, threshold, BANDWIDTH), expected)


def test_jumprelu_passes_the_gradient_to_codes_above_the_threshold_only():
    z = leaf([[0.1, 0.5, 0.9]])
    jumprelu(z, torch.tensor([0.2, 0.5, 0.5]), BANDWIDTH).sum().backward()
    assert z.grad.tolist() == [[0.0, 0.0, 1.0]]


def test_jumprelu_threshold_gradient_is_minus_threshold_over_bandwidth_inside_the_window():
    # Latent 0: rows at 0.52 and 0.47 lie within bandwidth/2 of 0.5, the row at 0.9 does not.
    z = torch.tensor([[0.52, 0.3], [0.47, 0.9], [0.9, 0.31]])
    threshold = leaf([0.5, 0.3])
    upstream = torch.tensor([[2.0, 1.0], [3.0, 1.0], [5.0, 7.0]])
    (jumprelu(z, threshold, BANDWIDTH) * upstream).sum().backward()
    expected = [-(0.5 / BANDWIDTH) * (2.0 + 3.0), -(0.3 / BANDWIDTH) * (1.0 + 7.0)]
    torch.testing.assert_close(threshold.grad, torch.tensor(expected))


def test_step_counts_values_above_the_threshold():
    z = torch.tensor([[0.1, 0.6], [0.7, 0.8]])
    assert step(z, torch.tensor([0.5, 0.75]), BANDWIDTH).tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_l0_penalty_sends_its_gradient_to_the_threshold_only():
    z = leaf([[0.52, 0.1], [0.9, 0.33], [0.47, 0.0]])
    threshold = leaf([0.5, 0.3])
    penalty = l0_penalty(z, threshold, BANDWIDTH)
    penalty.backward()
    assert float(penalty.detach()) == (2 + 1 + 0) / 3  # mean active latents per row
    assert z.grad is None or not z.grad.any()
    # d/dthreshold of mean_rows sum H(z - threshold) = -(1/bandwidth) * (rows in window) / N
    expected = [-(1 / BANDWIDTH) * 2 / 3, -(1 / BANDWIDTH) * 1 / 3]
    torch.testing.assert_close(threshold.grad, torch.tensor(expected))


def test_l1_penalty_is_the_mean_row_sum_of_absolute_codes():
    codes = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.5, 0.0]])
    assert float(l1_penalty(codes)) == (3.0 + 0.5) / 2


def test_auxk_loss_is_zero_without_dead_latents_and_uses_only_dead_ones():
    pre = torch.tensor([[3.0, 2.0, 1.0]])
    residual = torch.tensor([[0.0, 1.0]])
    w_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert float(auxk_loss(pre, residual, w_dec, torch.zeros(3, dtype=torch.bool), 2)) == 0
    dead = torch.tensor([False, True, False])  # only latent 1 may reconstruct the residual
    assert float(auxk_loss(pre, residual, w_dec, dead, 2)) == ((0 - 0) ** 2 + (2 - 1) ** 2) / 2
