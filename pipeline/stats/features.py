"""Per-latent statistics of SAE codes, as a mergeable accumulator.

Each unit of a store yields one partial; partials merge associatively, so units can be
encoded on any number of workers and combined at the driver in any grouping. Only sparse
codes (values and indices, K per token) are touched: memory is O(latents x top_k), never
O(tokens x latents).

Legend: N tokens, K codes per token, F latents, S top-k slots.
"""

from __future__ import annotations

import pandas as pd
import torch

from pipeline.hooks.accumulators import TopKExamples


class FeatureStats:
    """Firing counts, sums, sums of squares and maxima per latent, plus top-k examples."""

    def __init__(self, num_latents: int, top_k: int = 10):
        if num_latents < 1 or top_k < 1:
            raise ValueError(f"num_latents and top_k must be positive, got {num_latents}, {top_k}")
        self.num_latents = num_latents
        self.top_k = top_k
        self.num_tokens = 0
        self.count_F = torch.zeros(num_latents, dtype=torch.long)
        self.sum_F = torch.zeros(num_latents, dtype=torch.float64)
        self.sum_sq_F = torch.zeros(num_latents, dtype=torch.float64)
        self.max_F = torch.zeros(num_latents, dtype=torch.float64)
        self.examples = TopKExamples(top_k, num_features=num_latents)

    def update(
        self, values_NK: torch.Tensor, indices_NK: torch.Tensor, row_ids_N: torch.Tensor
    ) -> None:
        """Add N tokens' sparse codes; a latent fires where its value is > 0."""
        self.num_tokens += int(values_NK.shape[0])
        values = values_NK.detach().to("cpu", torch.float64)
        indices = indices_NK.detach().to("cpu", torch.long)
        active = values > 0
        latents, fired = indices[active], values[active]
        self.count_F += torch.bincount(latents, minlength=self.num_latents)
        self.sum_F.index_add_(0, latents, fired)
        self.sum_sq_F.index_add_(0, latents, fired * fired)
        self.max_F.scatter_reduce_(0, latents, fired, reduce="amax")
        masked = torch.where(active, values, torch.full_like(values, float("-inf")))
        self.examples.update_sparse(masked, indices, row_ids_N.to("cpu", torch.long))

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new accumulator equal to having seen both streams."""
        if (other.num_latents, other.top_k) != (self.num_latents, self.top_k):
            raise ValueError(
                f"cannot merge FeatureStats of {other.num_latents} latents / top_k={other.top_k} "
                f"into {self.num_latents} / {self.top_k}"
            )
        merged = FeatureStats(self.num_latents, self.top_k)
        merged.num_tokens = self.num_tokens + other.num_tokens
        merged.count_F = self.count_F + other.count_F
        merged.sum_F = self.sum_F + other.sum_F
        merged.sum_sq_F = self.sum_sq_F + other.sum_sq_F
        merged.max_F = torch.maximum(self.max_F, other.max_F)
        merged.examples = self.examples.merge(other.examples)
        return merged

    def features_frame(self) -> pd.DataFrame:
        """One row per latent: frequency, mean/std while active, max."""
        count = self.count_F.double()
        active = count.clamp(min=1)
        mean = self.sum_F / active
        variance = (self.sum_sq_F / active - mean * mean).clamp(min=0)
        return pd.DataFrame(
            {
                "latent": range(self.num_latents),
                "num_fired": self.count_F.numpy(),
                "frequency": (count / max(self.num_tokens, 1)).numpy(),
                "mean_active": torch.where(self.count_F > 0, mean, torch.nan).numpy(),
                "std_active": torch.where(self.count_F > 0, variance.sqrt(), torch.nan).numpy(),
                "max": self.max_F.numpy(),
            }
        )

    def examples_frame(self) -> pd.DataFrame:
        """One row per (latent, rank) example that exists: its activation and store row."""
        values_FS, rows_FS = self.examples.values(), self.examples.row_ids()
        latent_FS = torch.arange(self.num_latents).unsqueeze(1).expand_as(rows_FS)
        rank_FS = torch.arange(self.top_k).unsqueeze(0).expand_as(rows_FS)
        keep = rows_FS >= 0
        return pd.DataFrame(
            {
                "latent": latent_FS[keep].numpy(),
                "rank": rank_FS[keep].numpy(),
                "activation": values_FS[keep].numpy(),
                "row": rows_FS[keep].numpy(),
            }
        )
