"""The top-k examples of every feature, bounded by features x k, mergeable in any order."""

from __future__ import annotations

import torch

from pipeline.accumulators.common import (
    NO_ID,
    ArrayLike,
    best_per_row,
    rank_order,
    reject_nan,
    require_positive,
    row_ids,
    to_cpu,
)


class TopKExamples:
    """Per feature, the ``k`` largest values seen and the row ids they came from.

    Order is larger value first, ties broken by lower row id, so the result does not depend
    on batching or merge order. Slots not yet filled hold value -inf and row id -1. Row ids
    should be unique across the streams that are merged. Values are kept in float64.
    ``num_features`` is fixed by the first dense update when not given; sparse updates need it.
    """

    def __init__(self, k: int, num_features: int | None = None) -> None:
        require_positive("k", k)
        if num_features is not None:
            require_positive("num_features", num_features)
        self.k = k
        self.num_features: int | None = None
        self._values_FS = torch.empty(0, k, dtype=torch.float64)
        self._ids_FS = torch.empty(0, k, dtype=torch.long)
        if num_features is not None:
            self._set_width(num_features)

    def _set_width(self, num_features: int) -> None:
        self.num_features = num_features
        self._values_FS = torch.full((num_features, self.k), float("-inf"), dtype=torch.float64)
        self._ids_FS = torch.full((num_features, self.k), NO_ID, dtype=torch.long)

    def _check_width(self, name: str, width: int) -> None:
        if self.num_features is None:
            self._set_width(width)
        elif width != self.num_features:
            raise ValueError(
                f"{name} has {width} features, expected num_features={self.num_features}"
            )

    def update(self, x_ND: ArrayLike, row_ids_N: ArrayLike) -> None:
        """Offer every value of dense ``x_ND``; row i's values come from row id ``row_ids_N[i]``."""
        x = to_cpu("x_ND", x_ND, torch.float64)
        ids_N = row_ids(row_ids_N, x.shape[0])
        reject_nan("x_ND", x)
        self._check_width("x_ND", x.shape[1])
        num_features, num_rows = x.shape[1], x.shape[0]
        self._keep_top(
            torch.cat([self._values_FS, x.T], dim=1),
            torch.cat([self._ids_FS, ids_N.expand(num_features, num_rows)], dim=1),
        )

    def update_sparse(
        self, values_NK: ArrayLike, indices_NK: ArrayLike, row_ids_N: ArrayLike
    ) -> None:
        """Offer sparse codes: row i has value ``values_NK[i, j]`` at feature ``indices_NK[i, j]``.

        Features absent from a row are not candidates for it (not zeros), nor is a -inf value
        (a masked slot), so a feature that never appears keeps -inf. A row may not list the
        same feature twice.
        """
        if self.num_features is None:
            raise ValueError("num_features must be given to TopKExamples before update_sparse")
        values = to_cpu("values_NK", values_NK, torch.float64)
        indices = to_cpu("indices_NK", indices_NK, ndim=2).long()
        if indices.shape != values.shape:
            raise ValueError(
                f"indices_NK shape {tuple(indices.shape)} != values_NK shape {tuple(values.shape)}"
            )
        ids_N = row_ids(row_ids_N, values.shape[0])
        reject_nan("values_NK", values)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_features):
            raise ValueError(f"indices_NK must lie in [0, {self.num_features})")
        sorted_NK = indices.sort(dim=1).values
        if (sorted_NK[:, 1:] == sorted_NK[:, :-1]).any():
            raise ValueError("indices_NK lists a feature twice in one row")

        num_features, k = self.num_features, self.k
        # Only candidates that can enter are ranked: at least the feature's k-th held value
        # (ties may still win on a lower row id); -inf (a masked slot) never enters.
        candidate_ids = ids_N.repeat_interleave(indices.shape[1])
        values, indices = values.flatten(), indices.flatten()
        floor_F = self._values_FS[:, -1].where(self._ids_FS[:, -1] >= 0, float("-inf"))
        can_enter = (values >= floor_F[indices]) & (values > float("-inf"))
        values, indices = values[can_enter], indices[can_enter]
        candidate_ids = candidate_ids[can_enter]
        held = self._ids_FS.flatten() >= 0
        feature = torch.cat([torch.arange(num_features).repeat_interleave(k)[held], indices])
        value = torch.cat([self._values_FS.flatten()[held], values])
        row_id = torch.cat([self._ids_FS.flatten()[held], candidate_ids])
        # Rank candidates within each feature, then keep the first k of each feature.
        order = rank_order(value, row_id)
        order = order[torch.sort(feature[order], stable=True).indices]
        feature, value, row_id = feature[order], value[order], row_id[order]
        counts_F = torch.bincount(feature, minlength=num_features)
        rank = torch.arange(feature.shape[0]) - (counts_F.cumsum(0) - counts_F)[feature]
        kept = rank < k
        self._set_width(num_features)
        self._values_FS[feature[kept], rank[kept]] = value[kept]  # fresh tensors: safe to write
        self._ids_FS[feature[kept], rank[kept]] = row_id[kept]

    def _keep_top(self, values_FC: torch.Tensor, ids_FC: torch.Tensor) -> None:
        self._values_FS, self._ids_FS = best_per_row(values_FC, ids_FC, self.k)

    def values(self) -> torch.Tensor:
        """Top values [F, k] per feature, best first, float64; -inf in unfilled slots."""
        return self._values_FS.clone()

    def row_ids(self) -> torch.Tensor:
        """Row ids [F, k] (int64) matching ``values``; -1 in unfilled slots."""
        return self._ids_FS.clone()

    def merge(self, other: TopKExamples) -> TopKExamples:
        """New accumulator holding the top ``k`` per feature of both streams."""
        if other.k != self.k:
            raise ValueError(f"other.k={other.k} differs from k={self.k}")
        out = TopKExamples(self.k)
        parts = [p for p in (self, other) if p.num_features is not None]
        for part in parts:
            out._check_width("other", part.num_features)
        if parts:
            out._keep_top(
                torch.cat([p._values_FS for p in parts], dim=1),
                torch.cat([p._ids_FS for p in parts], dim=1),
            )
        return out
