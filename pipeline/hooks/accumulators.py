"""Bounded, mergeable accumulators that activation detectors feed batch by batch.

Why they are built this way:

- Bounded: a detector may watch a whole corpus, so each accumulator holds a fixed-size state
  (N batches, ``capacity`` rows, four vectors of length F, or an [F, S] table) however many
  updates it sees.
- Mergeable: ``merge`` is associative and returns a new accumulator equal to one that saw
  both streams, so partials built on different Ray actors can be combined at the driver in
  any grouping. Inputs are never mutated: state tensors are replaced, never written in place,
  so a merged result may share tensors with its inputs safely.
- Exact where it can be: moments use Chan et al.'s parallel update in float64; the reservoir
  keeps the rows with the largest hash keys (bottom-k sampling), so a merge is just the top
  keys of the union; top-k examples break ties by lower row id, a total order that makes the
  result independent of batching and merge order.
- CPU only: inputs (torch tensors on any device, or numpy arrays) are detached and copied to
  CPU, so an accumulator never pins GPU memory and pickles cheaply to a Ray driver.

Shape legend: N rows in a batch, D features per row, F features (D seen as the leading axis of
per-feature state), K non-zero features per row of a sparse SAE code, S examples kept per
feature by TopKExamples (its ``k``), M rows held by the reservoir, C candidates per feature.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

_NO_ID = -1  # row id of an empty top-k slot; real row ids are >= 0
_ID_LAST = torch.iinfo(torch.int64).max


def _require_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _to_cpu(
    name: str, x: ArrayLike, dtype: torch.dtype | None = None, ndim: int = 2
) -> torch.Tensor:
    """Detached CPU copy of ``x`` with ``ndim`` dimensions (copying so callers may reuse buffers)."""
    t = torch.as_tensor(x).detach()
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t.to("cpu", dtype=dtype if dtype is not None else t.dtype, copy=True)


def _row_ids(row_ids_N: ArrayLike, num_rows: int) -> torch.Tensor:
    ids_N = _to_cpu("row_ids_N", row_ids_N, ndim=1)
    if ids_N.dtype.is_floating_point or ids_N.dtype == torch.bool:
        raise ValueError(f"row_ids_N must hold integers, got dtype {ids_N.dtype}")
    if ids_N.shape[0] != num_rows:
        raise ValueError(f"row_ids_N has {ids_N.shape[0]} ids for {num_rows} rows")
    if num_rows and int(ids_N.min()) < 0:
        raise ValueError("row_ids_N must be >= 0 (-1 marks an empty top-k slot)")
    return ids_N.long()


def _rank_order(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Permutation along the last axis: larger value first, then lower row id, empty slots last.

    Two stable sorts (by id, then by value) give a total order that does not depend on where
    candidates sit in the input, which is what makes merges associative.
    """
    id_key = torch.where(ids < 0, _ID_LAST, ids)
    by_id = torch.sort(id_key, dim=-1, stable=True).indices
    by_value = torch.sort(values.gather(-1, by_id), dim=-1, descending=True, stable=True).indices
    return by_id.gather(-1, by_value)


def _best_per_row(
    values_FC: torch.Tensor, ids_FC: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first k candidates in ``_rank_order``, as ([F, k] values, [F, k] ids).

    Sorting all C candidates is slow for large batches, so torch.topk finds each row's k-th
    largest value (the threshold); every candidate above it is kept, and the places left go
    to the lowest-id candidates equal to it. Only those 2k candidates are sorted.
    """
    threshold_F1 = torch.topk(values_FC, k, dim=1).values[:, -1:]
    above = values_FC > threshold_F1
    above_values, above_pos = torch.topk(values_FC.where(above, float("-inf")), k, dim=1)
    above_ids = ids_FC.gather(1, above_pos).where(above.gather(1, above_pos), _NO_ID)
    id_key_FC = torch.where(ids_FC < 0, _ID_LAST, ids_FC)
    tie_key_FC = id_key_FC.where(values_FC == threshold_F1, _ID_LAST)
    tie_ids = torch.topk(tie_key_FC, k, dim=1, largest=False).values
    values = torch.cat([above_values, threshold_F1.expand(-1, k)], dim=1)
    ids = torch.cat([above_ids, tie_ids.where(tie_ids != _ID_LAST, _NO_ID)], dim=1)
    best = _rank_order(values, ids)[:, :k]
    return values.gather(1, best), ids.gather(1, best)


def uniform_keys(seed: int, row_ids: torch.Tensor) -> torch.Tensor:
    """Float64 keys in [0, 1), a pure function of (seed, row id): SplitMix64's n-th output.

    Keys derived from the row id (not drawn from a generator) make the sample independent of
    how the stream was batched or split across actors, so merging partitions equals one stream.
    """
    mask = (1 << 64) - 1
    state = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask)
    z = row_ids.numpy().astype(np.uint64)
    z = state + (z + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


class LastNBatches:
    """Ring buffer of the last ``max_batches`` batches, kept as detached CPU copies.

    ``num_seen`` counts every batch ever given to ``update``. Recency is defined by update
    order and, for ``merge``, by argument order: ``a.merge(b)`` treats b's batches as newer.
    """

    def __init__(self, max_batches: int) -> None:
        _require_positive("max_batches", max_batches)
        self.max_batches = max_batches
        self.num_seen = 0
        self._batches: deque[torch.Tensor] = deque(maxlen=max_batches)

    def update(self, batch: ArrayLike) -> None:
        """Store a copy of ``batch``, dropping the oldest batch once ``max_batches`` are held."""
        t = torch.as_tensor(batch).detach()
        self._batches.append(t.to("cpu", copy=True))
        self.num_seen += 1

    def batches(self) -> list[torch.Tensor]:
        """Copies of the held batches, oldest first."""
        return [b.clone() for b in self._batches]

    def clear(self) -> None:
        """Forget every batch and reset ``num_seen``: back to a fresh accumulator."""
        self._batches.clear()
        self.num_seen = 0

    def merge(self, other: LastNBatches) -> LastNBatches:
        """New buffer holding the last ``max_batches`` of self's batches followed by other's."""
        if other.max_batches != self.max_batches:
            raise ValueError(
                f"other.max_batches={other.max_batches} differs from max_batches={self.max_batches}"
            )
        out = LastNBatches(self.max_batches)
        out._batches.extend(self._batches)
        out._batches.extend(other._batches)
        out.num_seen = self.num_seen + other.num_seen
        return out


class ReservoirSample:
    """Uniform sample without replacement of up to ``capacity`` token rows from a stream.

    Each row gets a key in [0, 1) hashed from (``seed``, row id); the sample is the
    ``capacity`` rows with the largest keys (bottom-k sampling), so every subset of that size
    is equally likely and the merge of two samples is the top keys of their union.

    For a merged sample to be uniform, (seed, row id) must be unique across the streams: pass
    global row ids (then the sample is the same however the stream was split), or give each
    actor its own seed. Without ``row_ids_N``, ids count rows seen by this accumulator
    (``num_seen`` onward), which repeat across actors.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        _require_positive("capacity", capacity)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.capacity = capacity
        self.seed = seed
        self.num_seen = 0
        self._keys_M = torch.empty(0, dtype=torch.float64)
        self._ids_M = torch.empty(0, dtype=torch.long)
        self._rows_MD: torch.Tensor | None = None  # dtype and width fixed by the first update

    def update(self, rows_ND: ArrayLike, row_ids_N: ArrayLike | None = None) -> None:
        """Offer every row of ``rows_ND``; rows are cast to the dtype of the first batch."""
        rows = _to_cpu("rows_ND", rows_ND)
        num_rows = rows.shape[0]
        if self._rows_MD is None:
            self._rows_MD = rows.new_empty((0, rows.shape[1]))
        elif rows.shape[1] != self._rows_MD.shape[1]:
            raise ValueError(
                f"rows_ND has {rows.shape[1]} columns, expected {self._rows_MD.shape[1]}"
            )
        if row_ids_N is None:
            ids_N = torch.arange(self.num_seen, self.num_seen + num_rows)
        else:
            ids_N = _row_ids(row_ids_N, num_rows)
        self.num_seen += num_rows
        keys_N = uniform_keys(self.seed, ids_N)
        full = self._keys_M.shape[0] == self.capacity
        if num_rows == 0 or (full and keys_N.max() < self._keys_M.min()):
            return  # nothing can enter: the common case once the reservoir is full
        self._keep_top(
            torch.cat([self._keys_M, keys_N]),
            torch.cat([self._ids_M, ids_N]),
            torch.cat([self._rows_MD, rows.to(self._rows_MD.dtype)]),
        )

    def _keep_top(self, keys: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> None:
        keep = _rank_order(keys, ids)[: self.capacity]
        self._keys_M, self._ids_M, self._rows_MD = keys[keep], ids[keep], rows[keep]

    def rows(self) -> torch.Tensor:
        """Sampled rows [M, D], M = min(capacity, num_seen), in the order of ``row_ids``."""
        return self._rows_MD.clone() if self._rows_MD is not None else torch.empty(0, 0)

    def row_ids(self) -> torch.Tensor:
        """Row ids [M] (int64) of the sampled rows."""
        return self._ids_M.clone()

    def merge(self, other: ReservoirSample) -> ReservoirSample:
        """New sample of the union of both streams (keeps self's ``seed`` for later updates)."""
        if other.capacity != self.capacity:
            raise ValueError(
                f"other.capacity={other.capacity} differs from capacity={self.capacity}"
            )
        out = ReservoirSample(self.capacity, self.seed)
        out.num_seen = self.num_seen + other.num_seen
        parts = [p._rows_MD for p in (self, other) if p._rows_MD is not None]
        if not parts:
            return out
        if parts[-1].shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"other rows have {parts[-1].shape[1]} columns, expected {parts[0].shape[1]}"
            )
        out._keep_top(
            torch.cat([self._keys_M, other._keys_M]),
            torch.cat([self._ids_M, other._ids_M]),
            torch.cat([p.to(parts[0].dtype) for p in parts]),
        )
        return out


class RunningMoments:
    """Per-feature mean, variance, min and max of the rows seen, in float64.

    ``count`` is the number of rows counted (one number: a mask selects whole rows).
    Batches and merges combine with Chan et al.'s parallel formula, exact up to rounding and
    stable for data with a large offset. With no rows, every statistic is NaN.
    ``num_features`` is fixed by the first update when not given.
    """

    def __init__(self, num_features: int | None = None) -> None:
        if num_features is not None:
            _require_positive("num_features", num_features)
        self.num_features = num_features
        self.count = 0
        self._mean_F: torch.Tensor | None = None
        self._m2_F: torch.Tensor | None = None  # sum of squared deviations from the mean
        self._min_F: torch.Tensor | None = None
        self._max_F: torch.Tensor | None = None

    def update(self, x_ND: ArrayLike, mask_N: ArrayLike | None = None) -> None:
        """Count the rows of ``x_ND`` where ``mask_N`` (bool [N]) is true, e.g. to skip padding."""
        x = _to_cpu("x_ND", x_ND, torch.float64)
        self._check_width("x_ND", x.shape[1])
        if mask_N is not None:
            mask = _to_cpu("mask_N", mask_N, ndim=1)
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


class TopKExamples:
    """Per feature, the ``k`` largest values seen and the row ids they came from.

    Order is larger value first, ties broken by lower row id, so the result does not depend
    on batching or merge order. Slots not yet filled hold value -inf and row id -1. Row ids
    should be unique across the streams that are merged. Values are kept in float64.
    ``num_features`` is fixed by the first dense update when not given; sparse updates need it.
    """

    def __init__(self, k: int, num_features: int | None = None) -> None:
        _require_positive("k", k)
        if num_features is not None:
            _require_positive("num_features", num_features)
        self.k = k
        self.num_features: int | None = None
        self._values_FS = torch.empty(0, k, dtype=torch.float64)
        self._ids_FS = torch.empty(0, k, dtype=torch.long)
        if num_features is not None:
            self._set_width(num_features)

    def _set_width(self, num_features: int) -> None:
        self.num_features = num_features
        self._values_FS = torch.full((num_features, self.k), float("-inf"), dtype=torch.float64)
        self._ids_FS = torch.full((num_features, self.k), _NO_ID, dtype=torch.long)

    def _check_width(self, name: str, width: int) -> None:
        if self.num_features is None:
            self._set_width(width)
        elif width != self.num_features:
            raise ValueError(
                f"{name} has {width} features, expected num_features={self.num_features}"
            )

    def update(self, x_ND: ArrayLike, row_ids_N: ArrayLike) -> None:
        """Offer every value of dense ``x_ND``; row i's values come from row id ``row_ids_N[i]``."""
        x = _to_cpu("x_ND", x_ND, torch.float64)
        ids_N = _row_ids(row_ids_N, x.shape[0])
        _reject_nan("x_ND", x)
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
        values = _to_cpu("values_NK", values_NK, torch.float64)
        indices = _to_cpu("indices_NK", indices_NK, ndim=2).long()
        if indices.shape != values.shape:
            raise ValueError(
                f"indices_NK shape {tuple(indices.shape)} != values_NK shape {tuple(values.shape)}"
            )
        ids_N = _row_ids(row_ids_N, values.shape[0])
        _reject_nan("values_NK", values)
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
        order = _rank_order(value, row_id)
        order = order[torch.sort(feature[order], stable=True).indices]
        feature, value, row_id = feature[order], value[order], row_id[order]
        counts_F = torch.bincount(feature, minlength=num_features)
        rank = torch.arange(feature.shape[0]) - (counts_F.cumsum(0) - counts_F)[feature]
        kept = rank < k
        self._set_width(num_features)
        self._values_FS[feature[kept], rank[kept]] = value[kept]  # fresh tensors: safe to write
        self._ids_FS[feature[kept], rank[kept]] = row_id[kept]

    def _keep_top(self, values_FC: torch.Tensor, ids_FC: torch.Tensor) -> None:
        self._values_FS, self._ids_FS = _best_per_row(values_FC, ids_FC, self.k)

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


def _reject_nan(name: str, x: torch.Tensor) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN, which has no place in a top-k ranking")
