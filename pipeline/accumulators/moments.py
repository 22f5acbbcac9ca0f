"""Per-feature count, mean, variance, min and max, exact and mergeable (Chan et al.)."""

from __future__ import annotations

import torch

from pipeline.accumulators.common import ArrayLike, require_positive, to_cpu


class RunningMoments:
    """Per-feature mean, variance, min and max of the rows seen, in float64.

    ``count`` is the number of rows counted (one number: a mask selects whole rows).
    Batches and merges combine with Chan et al.'s parallel formula, exact up to rounding and
    stable for data with a large offset. With no rows, every statistic is NaN.
    ``num_features`` is fixed by the first update when not given.
    """

    def __init__(self, num_features: int | None = None) -> None:
        if num_features is not None:
            require_positive("num_features", num_features)
        self.num_features = num_features
        self.count = 0
        self._mean_F: torch.Tensor | None = None
        self._m2_F: torch.Tensor | None = None  # sum of squared deviations from the mean
        self._min_F: torch.Tensor | None = None
        self._max_F: torch.Tensor | None = None

    def update(self, x_ND: ArrayLike, mask_N: ArrayLike | None = None) -> None:
        """Count the rows of ``x_ND`` where ``mask_N`` (bool [N]) is true, e.g. to skip padding."""
        x = to_cpu("x_ND", x_ND, torch.float64)
        self._check_width("x_ND", x.shape[1])
        if mask_N is not None:
            mask = to_cpu("mask_N", mask_N, ndim=1)
            if mask.dtype != torch.bool or mask.shape[0] != x.shape[0]:
                raise ValueError(
                    f"mask_N must be bool of shape [{x.shape[0]}], got {mask.dtype} {tuple(mask.shape)}"
                )
            x = x[mask]
        if x.shape[0] == 0:
            return
        mean_F = x.mean(0)
        self._absorb(x.shape[0], mean_F, ((x - mean_F) ** 2).sum(0), x.amin(0), x.amax(0))

    def _check_width(self, name: str, width: int) -> None:
        if self.num_features is None:
            self.num_features = width
        elif width != self.num_features:
            raise ValueError(
                f"{name} has {width} features, expected num_features={self.num_features}"
            )

    def _absorb(self, n_b: int, mean_b, m2_b, min_b, max_b) -> None:
        """Chan et al.: combine (count, mean, M2) of this state with another part's."""
        n_a = self.count
        if n_a == 0:
            self._mean_F, self._m2_F, self._min_F, self._max_F = mean_b, m2_b, min_b, max_b
        else:
            n = n_a + n_b
            delta = mean_b - self._mean_F
            self._mean_F = self._mean_F + delta * (n_b / n)
            self._m2_F = self._m2_F + m2_b + delta**2 * (n_a * n_b / n)
            self._min_F = torch.minimum(self._min_F, min_b)
            self._max_F = torch.maximum(self._max_F, max_b)
        self.count = n_a + n_b

    def _stat(self, t: torch.Tensor | None) -> torch.Tensor:
        if self.count == 0:
            return torch.full((self.num_features or 0,), float("nan"), dtype=torch.float64)
        return t.clone()

    @property
    def mean(self) -> torch.Tensor:
        """Per-feature mean [F], float64."""
        return self._stat(self._mean_F)

    @property
    def min(self) -> torch.Tensor:
        """Per-feature minimum [F], float64."""
        return self._stat(self._min_F)

    @property
    def max(self) -> torch.Tensor:
        """Per-feature maximum [F], float64."""
        return self._stat(self._max_F)

    def variance(self, ddof: int = 0) -> torch.Tensor:
        """Per-feature variance [F]: ddof=0 population, ddof=1 sample; NaN when count <= ddof."""
        if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
            raise ValueError(f"ddof must be a non-negative int (0 or 1), got {ddof!r}")
        if self.count <= ddof:
            return torch.full((self.num_features or 0,), float("nan"), dtype=torch.float64)
        return self._m2_F / (self.count - ddof)

    def std(self, ddof: int = 0) -> torch.Tensor:
        """Per-feature standard deviation [F], the square root of ``variance(ddof)``."""
        return self.variance(ddof).sqrt()

    def to_dict(self) -> dict[str, int | torch.Tensor]:
        """count, mean, variance and std (population, ddof=0), min and max."""
        return {
            "count": self.count,
            "mean": self.mean,
            "variance": self.variance(0),
            "std": self.std(0),
            "min": self.min,
            "max": self.max,
        }

    def merge(self, other: RunningMoments) -> RunningMoments:
        """New accumulator equal to one that saw self's rows and other's rows."""
        out = RunningMoments(self.num_features)
        for part in (self, other):
            if part.num_features is not None:
                out._check_width("other", part.num_features)
            if part.count:
                out._absorb(part.count, part._mean_F, part._m2_F, part._min_F, part._max_F)
        return out
