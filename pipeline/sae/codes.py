"""`SparseCodes`: what an SAE records of one batch, sparse (values and latent ids)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class SparseCodes:
    """The codes of one batch's real tokens (padding dropped), on CPU.

    Row n is token `position_N[n]` of batch row `batch_N[n]`; its code has value
    `values_NK[n, j]` at latent `indices_NK[n, j]`. Slots with value 0 are inactive
    (a ReLU'd top-k entry, or filler in a ragged ReLU batch).
    """

    values_NK: torch.Tensor
    indices_NK: torch.Tensor
    batch_N: torch.Tensor
    position_N: torch.Tensor
    n_latents: int

    def __len__(self) -> int:
        return self.values_NK.shape[0]

    def to_dense(self) -> torch.Tensor:
        """Dense codes [N, F]."""
        dense = self.values_NK.new_zeros((len(self), self.n_latents))
        return dense.scatter_(1, self.indices_NK, self.values_NK)

    def latent(self, neuron_idx: int) -> torch.Tensor:
        """Code of one latent for every row [N] (0 where it is not active)."""
        return (self.values_NK * (self.indices_NK == neuron_idx)).sum(1)
