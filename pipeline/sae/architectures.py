"""The three SAE kinds in common use: TopK, ReLU (L1-trained) and JumpReLU.

They differ only in the activation that turns pre-activations into codes; weights,
hook behaviour and files are the base class's.

TopK selects on the pre-activations (`select.topk_rows`, exact and faster than
`torch.topk` on CPU) and applies ReLU to the k selected values. As a
dense vector that equals `TopK(ReLU(pre))`: both keep the largest positive entries and
zero the rest. It is cheaper (ReLU on [N, k] instead of [N, F]) and it keeps the k
indices meaningful: when fewer than k pre-activations are positive, the extra slots
name the next-best latents with value 0. So a token has *at most* k non-zero codes,
exactly k whenever k pre-activations are positive, which random init guarantees in
practice (see `Sae.reset_parameters`) and trained SAEs nearly always satisfy.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.sae.base import Sae, _can_write_inplace
from pipeline.sae.config import SaeConfig
from pipeline.sae.select import topk_rows


class TopKSae(Sae):
    """`z = TopK(ReLU(W_enc (x - b_dec) + b_enc))`, `x_hat = W_dec z + b_dec`, k per token."""

    architecture = "topk"

    def __init__(
        self,
        n_latents: int,
        n_inputs: int,
        k: int,
        *,
        apply_b_dec_to_input: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        splice: bool = False,
    ):
        config = SaeConfig(
            architecture="topk",
            n_inputs=n_inputs,
            n_latents=n_latents,
            k=k,
            apply_b_dec_to_input=apply_b_dec_to_input,
        )
        super().__init__(config, dtype=dtype, device=device, splice=splice)

    @property
    def k(self) -> int:
        return self.config.k

    def _topk(self, pre_NF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values_NK, indices_NK = topk_rows(pre_NF, self.k, sorted=False)
        values_NK = values_NK.relu_() if _can_write_inplace(values_NK) else values_NK.relu()
        return values_NK, indices_NK

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values [..., k], indices [..., k]) in no particular order; no dense [N, F] codes built."""
        x_ND, lead = self._rows(x)
        values_NK, indices_NK = self._topk(self.pre_activations(x_ND, scratch=True))
        return values_NK.reshape(*lead, self.k), indices_NK.reshape(*lead, self.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense codes [..., F] with at most (in practice exactly) k non-zeros per row."""
        x_ND, lead = self._rows(x)
        pre_NF = self.pre_activations(x_ND)
        values_NK, indices_NK = self._topk(pre_NF)
        # The pre-activations are dead after the selection: reuse their buffer.
        if _can_write_inplace(pre_NF):
            dense_NF = pre_NF.zero_().scatter_(1, indices_NK, values_NK)
        else:
            dense_NF = torch.zeros_like(pre_NF).scatter(1, indices_NK, values_NK)
        return dense_NF.reshape(*lead, self.n_latents)


class _ThresholdSae(Sae):
    """What the ReLU kinds share: no k, codes from an elementwise activation."""

    def __init__(
        self,
        n_latents: int,
        n_inputs: int,
        *,
        apply_b_dec_to_input: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        splice: bool = False,
    ):
        config = SaeConfig(
            architecture=self.architecture,
            n_inputs=n_inputs,
            n_latents=n_latents,
            apply_b_dec_to_input=apply_b_dec_to_input,
        )
        super().__init__(config, dtype=dtype, device=device, splice=splice)


class ReluSae(_ThresholdSae):
    """The standard SAE trained with an L1 penalty: `z = ReLU(W_enc (x - b_dec) + b_enc)`."""

    architecture = "standard"

    def _activate(self, pre_NF: torch.Tensor) -> torch.Tensor:
        return pre_NF.relu_() if _can_write_inplace(pre_NF) else pre_NF.relu()


class JumpReluSae(_ThresholdSae):
    """`z = pre * (pre > threshold)` with one learned threshold per latent (Gemma Scope)."""

    architecture = "jumprelu"

    def __init__(self, n_latents: int, n_inputs: int, **options):
        super().__init__(n_latents, n_inputs, **options)
        # Zero thresholds make a fresh JumpReLU SAE a ReLU SAE until real ones are loaded.
        self.threshold = nn.Parameter(torch.zeros(n_latents, dtype=self.dtype, device=self.device))

    def _activate(self, pre_NF: torch.Tensor) -> torch.Tensor:
        keep_NF = (pre_NF > self.threshold) & (pre_NF > 0)
        return pre_NF.mul_(keep_NF) if _can_write_inplace(pre_NF) else pre_NF * keep_NF
