"""Per-latent statistics of SAE codes, as a mergeable accumulator.

Each unit of a store yields one partial; partials merge associatively, so units can be
encoded on any number of workers and combined at the driver in any grouping. Only sparse
codes (values and indices, K per token) are touched: memory is O(latents x (top_k +
samples + bins)), never O(tokens x latents).

What a dashboard needs beyond counts, all exact and independent of how units are split:

- the activation histogram of each latent over fixed log-spaced bins (`ACTIVATION_BINS`,
  ten per decade from 1e-4 to 1e4, values outside clamp to the end bins): fixed edges
  make partial histograms add;
- a uniform sample of each latent's firings (bottom-k sampling: each (row, latent) firing
  gets a key hashed from its ids, the `samples` largest keys are kept), which shows the
  weak activations the top examples never do;
- the L0 histogram: tokens per number of firing latents.

Legend: N tokens, K codes per token, F latents, S top-k slots, B histogram bins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.accumulators import TopKExamples, uniform_keys

ACTIVATION_BIN_EDGES = np.logspace(-4, 4, 81)  # B + 1 edges: ten bins per decade
NUM_BINS = len(ACTIVATION_BIN_EDGES) - 1
SAMPLE_SEED = 20261201


class FeatureStats:
    """Firing counts, sums, sums of squares, maxima and activation histograms per latent,
    top-k examples, a uniform sample of firings, and the L0 histogram."""

    def __init__(self, num_latents: int, top_k: int = 10, samples: int = 20):
        if num_latents < 1 or top_k < 1 or samples < 1:
            raise ValueError(
                f"num_latents, top_k and samples must be positive, got {num_latents}, "
                f"{top_k}, {samples}"
            )
        self.num_latents = num_latents
        self.top_k = top_k
        self.num_samples = samples
        self.num_tokens = 0
        self.count_F = torch.zeros(num_latents, dtype=torch.long)
        self.sum_F = torch.zeros(num_latents, dtype=torch.float64)
        self.sum_sq_F = torch.zeros(num_latents, dtype=torch.float64)
        self.max_F = torch.zeros(num_latents, dtype=torch.float64)
        self.hist_FB = torch.zeros(num_latents, NUM_BINS, dtype=torch.long)
        self.l0_hist = torch.zeros(1, dtype=torch.long)  # tokens per L0, grown as needed
        self.examples = TopKExamples(top_k, num_features=num_latents)
        self.samples = TopKExamples(samples, num_features=num_latents)  # keys, not values

    def update(
        self, values_NK: torch.Tensor, indices_NK: torch.Tensor, row_ids_N: torch.Tensor
    ) -> None:
        """Add N tokens' sparse codes; a latent fires where its value is > 0."""
        self.num_tokens += int(values_NK.shape[0])
        values = values_NK.detach().to("cpu", torch.float64)
        indices = indices_NK.detach().to("cpu", torch.long)
        rows = row_ids_N.to("cpu", torch.long)
        active = values > 0
        latents, fired = indices[active], values[active]
        self.count_F += torch.bincount(latents, minlength=self.num_latents)
        self.sum_F.index_add_(0, latents, fired)
        self.sum_sq_F.index_add_(0, latents, fired * fired)
        self.max_F.scatter_reduce_(0, latents, fired, reduce="amax")
        bins = torch.from_numpy(activation_bins(fired.numpy()))
        self.hist_FB.view(-1).index_add_(
            0, latents * NUM_BINS + bins, torch.ones_like(latents, dtype=torch.long)
        )
        self.l0_hist = _add_padded(self.l0_hist, torch.bincount(active.sum(1)))
        none = torch.full_like(values, float("-inf"))
        self.examples.update_sparse(torch.where(active, values, none), indices, rows)
        pair_ids = rows.unsqueeze(1) * self.num_latents + indices  # one id per (row, latent)
        keys = uniform_keys(SAMPLE_SEED, pair_ids.flatten()).view_as(values)
        self.samples.update_sparse(torch.where(active, keys, none), indices, rows)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new accumulator equal to having seen both streams."""
        shape = (self.num_latents, self.top_k, self.num_samples)
        if (other.num_latents, other.top_k, other.num_samples) != shape:
            raise ValueError(
                f"cannot merge FeatureStats of {other.num_latents} latents / top_k="
                f"{other.top_k} / samples={other.num_samples} into {shape[0]} / {shape[1]} / "
                f"{shape[2]}"
            )
        merged = FeatureStats(*shape)
        merged.num_tokens = self.num_tokens + other.num_tokens
        merged.count_F = self.count_F + other.count_F
        merged.sum_F = self.sum_F + other.sum_F
        merged.sum_sq_F = self.sum_sq_F + other.sum_sq_F
        merged.max_F = torch.maximum(self.max_F, other.max_F)
        merged.hist_FB = self.hist_FB + other.hist_FB
        merged.l0_hist = _add_padded(self.l0_hist, other.l0_hist)
        merged.examples = self.examples.merge(other.examples)
        merged.samples = self.samples.merge(other.samples)
        return merged

    def features_frame(self) -> pd.DataFrame:
        """One row per latent: frequency, mean/std while active, max, activation histogram."""
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
                "histogram": list(self.hist_FB.numpy()),
            }
        )

    def examples_frame(self) -> pd.DataFrame:
        """One row per (latent, rank) example that exists: its activation and store row."""
        return _slots_frame(self.examples.values(), self.examples.row_ids())

    def samples_frame(self) -> pd.DataFrame:
        """One row per sampled firing: latent, rank (by key), row. Activations are not kept
        (the slot holds the sampling key); the replay of contexts recovers them."""
        frame = _slots_frame(self.samples.values(), self.samples.row_ids())
        return frame.drop(columns="activation")


def activation_bins(values: np.ndarray) -> np.ndarray:
    """The `ACTIVATION_BIN_EDGES` bin of each value (out-of-range values in the end bins)."""
    return np.clip(np.searchsorted(ACTIVATION_BIN_EDGES, values, side="right") - 1, 0, NUM_BINS - 1)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(len(a), len(b))
    return torch.nn.functional.pad(a, (0, size - len(a))) + torch.nn.functional.pad(
        b, (0, size - len(b))
    )


def _slots_frame(values_FS: torch.Tensor, rows_FS: torch.Tensor) -> pd.DataFrame:
    num_latents, num_slots = rows_FS.shape
    latent_FS = torch.arange(num_latents).unsqueeze(1).expand_as(rows_FS)
    rank_FS = torch.arange(num_slots).unsqueeze(0).expand_as(rows_FS)
    keep = rows_FS >= 0
    return pd.DataFrame(
        {
            "latent": latent_FS[keep].numpy(),
            "rank": rank_FS[keep].numpy(),
            "activation": values_FS[keep].numpy(),
            "row": rows_FS[keep].numpy(),
        }
    )
