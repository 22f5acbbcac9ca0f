"""The sparsity terms of SAE training, one per architecture, as small pure functions.

- TopK needs no penalty (k fixes sparsity); dead latents get the AuxK loss (Gao et al.
  2024): the top `aux_k` dead latents reconstruct the residual the live ones leave.
- ReLU SAEs take an L1 penalty on the codes. The trainer keeps decoder rows unit-norm,
  and on unit-norm rows `sum_i |z_i| * ||W_dec[i]||` (Anthropic's April 2024 recipe for a
  free decoder) equals `sum_i |z_i|`, so the plain L1 is that penalty on the constraint
  set: one decoder treatment for every architecture, and a code is the magnitude along a
  unit direction.
- JumpReLU SAEs (Rajamanoharan et al. 2024, "Jumping Ahead") take an L0 penalty. The
  threshold only enters through step functions, whose true gradient is zero almost
  everywhere, so `jumprelu` and `step` use the paper's straight-through pseudo-derivatives
  with a rectangle kernel of width `bandwidth`:
  `d/d threshold JumpReLU(z) = -(threshold / bandwidth) * rect((z - threshold) / bandwidth)`
  and `d/d threshold H(z - threshold) = -(1 / bandwidth) * rect((z - threshold) / bandwidth)`.
  The codes keep their ordinary gradient where they pass the threshold; the L0 term
  sends no gradient to the pre-activations, only to the threshold (as in the paper).

Legend: N rows, D input width, F latents, K selected latents per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The kernel `1 if -1/2 < u < 1/2 else 0`, in `u`'s dtype."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z_NF, threshold_F, bandwidth: float):
        ctx.save_for_backward(z_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return z_NF * (z_NF > threshold_F)

    @staticmethod
    def backward(ctx, grad_NF):
        z_NF, threshold_F = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_z = grad_NF * (z_NF > threshold_F)
        kernel_NF = rectangle((z_NF - threshold_F) / bandwidth)
        grad_threshold = (-(threshold_F / bandwidth) * kernel_NF * grad_NF).sum(0)
        return grad_z, grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z_NF, threshold_F, bandwidth: float):
        ctx.save_for_backward(z_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return (z_NF > threshold_F).to(z_NF.dtype)

    @staticmethod
    def backward(ctx, grad_NF):
        z_NF, threshold_F = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        kernel_NF = rectangle((z_NF - threshold_F) / bandwidth)
        grad_threshold = (-(1.0 / bandwidth) * kernel_NF * grad_NF).sum(0)
        return None, grad_threshold, None


def jumprelu(z_NF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """`z * (z > threshold)`, with the straight-through gradient for the threshold."""
    return _JumpRelu.apply(z_NF, threshold_F, bandwidth)


def step(z_NF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """`H(z - threshold)` as 0/1, with the straight-through gradient for the threshold only."""
    return _Step.apply(z_NF, threshold_F, bandwidth)


def l1_penalty(codes_NF: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `sum_i |z_i|` (decoder rows are unit-norm during training)."""
    return codes_NF.abs().sum(1).mean()


def l0_penalty(z_NF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Mean over rows of the number of latents above threshold, differentiable in threshold."""
    return step(z_NF, threshold_F, bandwidth).sum(1).mean()


def auxk_loss(
    pre_NF: torch.Tensor,
    residual_ND: torch.Tensor,
    W_dec_FD: torch.Tensor,
    dead_F: torch.Tensor,
    aux_k: int,
) -> torch.Tensor:
    """MSE of the residual against its reconstruction from the top `aux_k` dead latents."""
    num_dead = int(dead_F.sum())
    if num_dead == 0:
        return pre_NF.new_zeros(())
    aux_pre_NF = pre_NF.masked_fill(~dead_F, float("-inf"))
    values_NK, indices_NK = aux_pre_NF.topk(min(aux_k, num_dead), dim=1)
    aux_hat_ND = nnf.embedding_bag(
        indices_NK, W_dec_FD, per_sample_weights=values_NK.relu(), mode="sum"
    )
    return (aux_hat_ND - residual_ND.detach()).pow(2).mean()
