"""Unit tests for pipeline.accumulators: bounded state, exact merges, numpy agreement.

Shape legend: N rows, D features, K non-zeros per sparse row, F features, S kept per feature.
"""

from collections import deque

import numpy as np
import pytest
import torch

from pipeline.accumulators import (
    LastNBatches,
    ReservoirSample,
    RunningMoments,
    TopKExamples,
)


def _state_numel(acc) -> int:
    """Elements held in an accumulator's state tensors, including tensors inside containers."""
    total = 0
    for value in vars(acc).values():
        items = value if isinstance(value, list | tuple | deque) else [value]
        total += sum(t.numel() for t in items if isinstance(t, torch.Tensor))
    return total


def _brute_topk(values_ND: np.ndarray, ids_N: np.ndarray, k: int, present_ND=None):
    """Reference ranking: per feature, sort (value desc, row id asc) over all rows; pad."""
    num_rows, num_features = values_ND.shape
    best_values = np.full((num_features, k), -np.inf)
    best_ids = np.full((num_features, k), -1, dtype=np.int64)
    for f in range(num_features):
        cands = [
            (values_ND[i, f], ids_N[i])
            for i in range(num_rows)
            if present_ND is None or present_ND[i, f]
        ]
        cands.sort(key=lambda c: (-c[0], c[1]))
        for j, (v, i) in enumerate(cands[:k]):
            best_values[f, j], best_ids[f, j] = v, i
    return best_values, best_ids


def _tied_stream(num_rows: int, num_features: int, seed: int):
    """Integer-valued rows (many ties) with shuffled row ids, so arrival order != id order."""
    rng = np.random.default_rng(seed)
    values_ND = rng.integers(0, 6, size=(num_rows, num_features)).astype(np.float32)
    ids_N = rng.permutation(10 * num_rows)[:num_rows].astype(np.int64)
    return values_ND, ids_N


def _sparse_stream(num_rows: int, num_features: int, nnz: int, seed: int):
    """Sparse codes as (values_NK, indices_NK) plus their dense form and presence mask."""
    rng = np.random.default_rng(seed)
    indices_NK = np.stack([rng.choice(num_features, nnz, replace=False) for _ in range(num_rows)])
    values_NK = rng.integers(1, 5, size=(num_rows, nnz)).astype(np.float32)
    dense_ND = np.zeros((num_rows, num_features), dtype=np.float32)
    present_ND = np.zeros((num_rows, num_features), dtype=bool)
    np.put_along_axis(dense_ND, indices_NK, values_NK, axis=1)
    np.put_along_axis(present_ND, indices_NK, True, axis=1)
    return values_NK, indices_NK, dense_ND, present_ND


# --- constructors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: LastNBatches(0), "max_batches"),
        (lambda: ReservoirSample(-1), "capacity"),
        (lambda: RunningMoments(0), "num_features"),
        (lambda: TopKExamples(0), "k"),
        (lambda: TopKExamples(3, num_features=0), "num_features"),
    ],
)
def test_constructors_reject_non_positive_sizes_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


# --- LastNBatches ---------------------------------------------------------------------------


def test_last_n_batches_keeps_most_recent_oldest_first():
    acc = LastNBatches(3)
    for i in range(5):
        acc.update(torch.full((2,), float(i)))
    assert [b[0].item() for b in acc.batches()] == [2.0, 3.0, 4.0]
    assert acc.num_seen == 5


def test_last_n_batches_stores_detached_copies():
    source = torch.ones(3, requires_grad=True)
    buffer = np.zeros(3)
    acc = LastNBatches(2)
    acc.update(source * 2)
    acc.update(buffer)
    buffer[:] = 7.0
    stored_grad, stored_np = acc.batches()
    assert not stored_grad.requires_grad
    assert torch.equal(stored_np, torch.zeros(3, dtype=torch.float64))


def test_last_n_batches_merge_keeps_last_n_of_self_then_other():
    a, b = LastNBatches(3), LastNBatches(3)
    for i in range(3):
        a.update(torch.tensor([i]))
    for i in range(10, 12):
        b.update(torch.tensor([i]))
    merged = a.merge(b)
    assert [int(t) for t in merged.batches()] == [2, 10, 11]
    assert merged.num_seen == 5
    assert [int(t) for t in a.batches()] == [0, 1, 2]  # inputs untouched


def test_last_n_batches_merge_is_associative():
    parts = []
    for start in (0, 10, 20):
        acc = LastNBatches(4)
        for i in range(start, start + 3):
            acc.update(torch.tensor([i]))
        parts.append(acc)
    a, b, c = parts
    left = [int(t) for t in a.merge(b).merge(c).batches()]
    right = [int(t) for t in a.merge(b.merge(c)).batches()]
    assert left == right == [12, 20, 21, 22]


def test_last_n_batches_clear_returns_to_fresh_state():
    acc = LastNBatches(2)
    acc.update(torch.zeros(1))
    acc.clear()
    assert acc.batches() == [] and acc.num_seen == 0


def test_last_n_batches_merge_rejects_different_max_batches():
    with pytest.raises(ValueError, match="max_batches"):
        LastNBatches(2).merge(LastNBatches(3))


# --- ReservoirSample ------------------------------------------------------------------------


def test_reservoir_holds_every_row_until_capacity():
    acc = ReservoirSample(capacity=10)
    rows_ND = torch.arange(12.0).reshape(6, 2)
    acc.update(rows_ND)
    assert sorted(acc.row_ids().tolist()) == list(range(6))
    assert torch.equal(acc.rows(), rows_ND[acc.row_ids()])


def test_reservoir_rows_match_their_row_ids():
    acc = ReservoirSample(capacity=5, seed=3)
    rows_ND = torch.arange(100.0).reshape(50, 2)
    for start in range(0, 50, 7):
        acc.update(rows_ND[start : start + 7])
    assert acc.num_seen == 50 and acc.row_ids().shape == (5,)
    assert torch.equal(acc.rows(), rows_ND[acc.row_ids()])


def test_reservoir_is_deterministic_for_fixed_seed_and_varies_with_seed():
    rows_ND = torch.randn(200, 3)
    samples = {}
    for seed in (1, 1, 2):
        acc = ReservoirSample(capacity=10, seed=seed)
        acc.update(rows_ND)
        samples.setdefault(seed, []).append(acc.row_ids().tolist())
    assert samples[1][0] == samples[1][1]
    assert samples[1][0] != samples[2][0]


def test_reservoir_sample_does_not_depend_on_batching():
    rows_ND = torch.randn(300, 4)
    one_batch, small_batches = ReservoirSample(16, seed=5), ReservoirSample(16, seed=5)
    one_batch.update(rows_ND)
    for start in range(0, 300, 11):
        small_batches.update(rows_ND[start : start + 11])
    assert torch.equal(one_batch.row_ids(), small_batches.row_ids())
    assert torch.equal(one_batch.rows(), small_batches.rows())


def test_reservoir_inclusion_frequency_is_uniform():
    num_rows, capacity, num_trials = 100, 10, 1000
    rows_ND = torch.arange(num_rows, dtype=torch.float32).unsqueeze(1)
    hits_N = np.zeros(num_rows)
    for seed in range(num_trials):
        acc = ReservoirSample(capacity, seed=seed)
        for start in range(0, num_rows, 25):
            acc.update(rows_ND[start : start + 25])
        hits_N[acc.row_ids().numpy()] += 1
    freq_N = hits_N / num_trials
    expected = capacity / num_rows
    # Per row: binomial sd ~0.0095, so 0.05 is > 5 sd; "keep first/last N" gives 0 or 1.
    assert np.abs(freq_N - expected).max() < 0.05
    # Early vs late rows: a recency bias of even 10% relative would show here.
    assert abs(freq_N[:50].mean() - freq_N[50:].mean()) < 0.01


def test_reservoir_merge_of_partitions_equals_single_stream():
    rows_ND = torch.randn(240, 3)
    ids_N = torch.arange(1000, 1240)
    whole = ReservoirSample(12, seed=9)
    whole.update(rows_ND, ids_N)
    parts = []
    for start, stop in ((0, 17), (17, 200), (200, 240)):
        part = ReservoirSample(12, seed=9)
        part.update(rows_ND[start:stop], ids_N[start:stop])
        parts.append(part)
    a, b, c = parts
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b)):
        assert torch.equal(merged.row_ids(), whole.row_ids())
        assert torch.equal(merged.rows(), whole.rows())
        assert merged.num_seen == 240
    assert a.num_seen == 17 and a.row_ids().shape == (12,)  # inputs untouched


def test_reservoir_merge_with_empty_is_identity():
    acc = ReservoirSample(4)
    acc.update(torch.randn(20, 2))
    for merged in (acc.merge(ReservoirSample(4)), ReservoirSample(4).merge(acc)):
        assert torch.equal(merged.row_ids(), acc.row_ids())
        assert torch.equal(merged.rows(), acc.rows())


def test_reservoir_rejects_width_change():
    acc = ReservoirSample(4)
    acc.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="rows_ND"):
        acc.update(torch.zeros(2, 5))


# --- RunningMoments -------------------------------------------------------------------------


def _assert_moments_match(acc: RunningMoments, data_ND: np.ndarray) -> None:
    assert acc.count == data_ND.shape[0]
    np.testing.assert_allclose(acc.mean.numpy(), data_ND.mean(0), rtol=1e-12, atol=1e-9)
    for ddof in range(min(2, data_ND.shape[0])):  # numpy warns where count <= ddof
        np.testing.assert_allclose(
            acc.variance(ddof).numpy(), data_ND.var(0, ddof=ddof), rtol=1e-10, atol=1e-9
        )
        np.testing.assert_allclose(acc.std(ddof).numpy(), data_ND.std(0, ddof=ddof), rtol=1e-10)
    np.testing.assert_array_equal(acc.min.numpy(), data_ND.min(0))
    np.testing.assert_array_equal(acc.max.numpy(), data_ND.max(0))


def test_moments_match_numpy_on_concatenation():
    rng = np.random.default_rng(0)
    batches = [rng.normal(1e4, 3.0, size=(n, 5)).astype(np.float32) for n in (1, 7, 64, 3)]
    acc = RunningMoments()
    for batch in batches:
        acc.update(batch)
    _assert_moments_match(acc, np.concatenate(batches).astype(np.float64))


def test_moments_mask_excludes_rows():
    rng = np.random.default_rng(1)
    x_ND = rng.normal(size=(40, 3))
    mask_N = rng.random(40) < 0.6
    acc = RunningMoments(3)
    acc.update(torch.as_tensor(x_ND), torch.as_tensor(mask_N))
    _assert_moments_match(acc, x_ND[mask_N])


def test_moments_merge_of_uneven_splits_matches_numpy():
    rng = np.random.default_rng(2)
    x_ND = rng.normal(-3.0, 10.0, size=(101, 4))
    parts = []
    for start, stop in ((0, 1), (1, 90), (90, 101)):
        part = RunningMoments()
        part.update(x_ND[start:stop])
        parts.append(part)
    a, b, c = parts
    _assert_moments_match(a.merge(b).merge(c), x_ND)
    _assert_moments_match(a.merge(b.merge(c)), x_ND)
    _assert_moments_match(a, x_ND[:1])  # inputs untouched


def test_moments_merge_with_empty_is_identity():
    x_ND = np.random.default_rng(3).normal(size=(10, 2))
    acc = RunningMoments()
    acc.update(x_ND)
    for empty in (RunningMoments(), RunningMoments(2)):
        _assert_moments_match(acc.merge(empty), x_ND)
        _assert_moments_match(empty.merge(acc), x_ND)


def test_moments_without_rows_report_nan():
    acc = RunningMoments(3)
    acc.update(np.ones((2, 3)), np.zeros(2, dtype=bool))
    assert acc.count == 0
    for stat in (acc.mean, acc.variance(), acc.min, acc.max):
        assert stat.shape == (3,) and torch.isnan(stat).all()
    acc.update(np.ones((1, 3)))
    assert torch.isnan(acc.variance(ddof=1)).all()
    assert torch.equal(acc.variance(ddof=0), torch.zeros(3, dtype=torch.float64))


def test_moments_to_dict_reports_population_statistics():
    acc = RunningMoments()
    acc.update(torch.tensor([[1.0], [3.0]]))
    stats = acc.to_dict()
    assert stats["count"] == 2
    assert stats["mean"].item() == 2.0 and stats["variance"].item() == 1.0
    assert stats["std"].item() == 1.0
    assert stats["min"].item() == 1.0 and stats["max"].item() == 3.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x_ND": np.zeros((2, 4))}, "x_ND"),
        ({"x_ND": np.zeros(3)}, "x_ND"),
        ({"x_ND": np.zeros((2, 3)), "mask_N": np.ones(2)}, "mask_N"),
        ({"x_ND": np.zeros((2, 3)), "mask_N": np.ones(3, dtype=bool)}, "mask_N"),
    ],
)
def test_moments_reject_bad_input_naming_the_argument(kwargs, match):
    acc = RunningMoments(3)
    with pytest.raises(ValueError, match=match):
        acc.update(**kwargs)


# --- TopKExamples ---------------------------------------------------------------------------


def test_topk_matches_brute_force_over_many_batches():
    values_ND, ids_N = _tied_stream(num_rows=300, num_features=6, seed=0)
    acc = TopKExamples(k=5)
    for start in range(0, 300, 13):
        acc.update(values_ND[start : start + 13], ids_N[start : start + 13])
    best_values, best_ids = _brute_topk(values_ND, ids_N, k=5)
    np.testing.assert_array_equal(acc.values().numpy(), best_values)
    np.testing.assert_array_equal(acc.row_ids().numpy(), best_ids)


def test_topk_pads_with_neg_inf_until_k_rows_seen():
    acc = TopKExamples(k=4)
    acc.update(torch.tensor([[1.0, 5.0], [2.0, 5.0]]), torch.tensor([8, 3]))
    assert acc.values().tolist() == [[2.0, 1.0, -np.inf, -np.inf], [5.0, 5.0, -np.inf, -np.inf]]
    assert acc.row_ids().tolist() == [[3, 8, -1, -1], [3, 8, -1, -1]]


def test_topk_sparse_matches_brute_force_over_present_entries():
    num_features = 12
    values_NK, indices_NK, dense_ND, present_ND = _sparse_stream(200, num_features, 3, seed=1)
    ids_N = np.random.default_rng(2).permutation(5000)[:200]
    acc = TopKExamples(k=4, num_features=num_features)
    for start in range(0, 200, 9):
        rows = slice(start, start + 9)
        acc.update_sparse(values_NK[rows], indices_NK[rows], ids_N[rows])
    best_values, best_ids = _brute_topk(dense_ND, ids_N, k=4, present_ND=present_ND)
    np.testing.assert_array_equal(acc.values().numpy(), best_values)
    np.testing.assert_array_equal(acc.row_ids().numpy(), best_ids)


def test_topk_sparse_features_never_seen_keep_neg_inf():
    acc = TopKExamples(k=2, num_features=4)
    acc.update_sparse(torch.tensor([[3.0, 1.0]]), torch.tensor([[2, 0]]), torch.tensor([7]))
    assert acc.values().tolist() == [[1.0, -np.inf], [-np.inf] * 2, [3.0, -np.inf], [-np.inf] * 2]
    assert acc.row_ids().tolist() == [[7, -1], [-1, -1], [7, -1], [-1, -1]]


def test_topk_merge_is_associative_and_equals_one_stream():
    values_ND, ids_N = _tied_stream(num_rows=90, num_features=5, seed=3)
    whole = TopKExamples(k=6)
    whole.update(values_ND, ids_N)
    parts = []
    for start, stop in ((0, 2), (2, 70), (70, 90)):
        part = TopKExamples(k=6)
        part.update(values_ND[start:stop], ids_N[start:stop])
        parts.append(part)
    a, b, c = parts
    a_values = a.values()
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(b).merge(a)):
        assert torch.equal(merged.values(), whole.values())
        assert torch.equal(merged.row_ids(), whole.row_ids())
    assert torch.equal(a.values(), a_values)  # inputs untouched


def test_topk_merge_with_empty_is_identity():
    acc = TopKExamples(k=3)
    acc.update(torch.randn(5, 4), torch.arange(5))
    for merged in (acc.merge(TopKExamples(3)), TopKExamples(3, num_features=4).merge(acc)):
        assert torch.equal(merged.values(), acc.values())
        assert torch.equal(merged.row_ids(), acc.row_ids())


def test_topk_sparse_and_dense_updates_mix():
    acc = TopKExamples(k=2, num_features=3)
    acc.update(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([0]))
    acc.update_sparse(torch.tensor([[4.0]]), torch.tensor([[1]]), torch.tensor([1]))
    assert acc.values().tolist() == [[1.0, -np.inf], [4.0, 1.0], [1.0, -np.inf]]
    assert acc.row_ids().tolist() == [[0, -1], [1, 0], [0, -1]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda acc: acc.update(torch.tensor([[float("nan"), 0.0]]), [0]), "x_ND"),
        (lambda acc: acc.update(torch.zeros(1, 2), [-3]), "row_ids_N"),
        (lambda acc: acc.update(torch.zeros(2, 2), [0]), "row_ids_N"),
        (lambda acc: acc.update(torch.zeros(1, 5), [0]), "x_ND"),
        (lambda acc: acc.update_sparse([[1.0, 2.0]], [[1, 1]], [0]), "indices_NK"),
        (lambda acc: acc.update_sparse([[1.0]], [[2]], [0]), "indices_NK"),
        (lambda acc: acc.update_sparse([[1.0, 2.0]], [[1]], [0]), "indices_NK"),
    ],
)
def test_topk_rejects_bad_input_naming_the_argument(call, match):
    acc = TopKExamples(k=2, num_features=2)
    with pytest.raises(ValueError, match=match):
        call(acc)


def test_topk_sparse_update_needs_num_features():
    with pytest.raises(ValueError, match="num_features"):
        TopKExamples(k=2).update_sparse([[1.0]], [[0]], [0])


# --- bounded memory -------------------------------------------------------------------------


def _update_last_n(acc, i, batch_ND, _indices):
    acc.update(batch_ND)


def _update_reservoir(acc, i, batch_ND, _indices):
    acc.update(batch_ND)


def _update_moments(acc, i, batch_ND, _indices):
    acc.update(batch_ND, torch.tensor([True, False, True, True]))


def _update_topk(acc, i, batch_ND, _indices):
    acc.update(batch_ND, torch.arange(4 * i, 4 * i + 4))


def _update_topk_sparse(acc, i, batch_ND, indices_NK):
    acc.update_sparse(batch_ND[:, :2], indices_NK, torch.arange(4 * i, 4 * i + 4))


@pytest.mark.parametrize(
    ("build", "update"),
    [
        (lambda: LastNBatches(5), _update_last_n),
        (lambda: ReservoirSample(16), _update_reservoir),
        (lambda: RunningMoments(), _update_moments),
        (lambda: TopKExamples(k=8), _update_topk),
        (lambda: TopKExamples(k=8, num_features=8), _update_topk_sparse),
    ],
    ids=["last_n", "reservoir", "moments", "topk", "topk_sparse"],
)
def test_state_size_is_flat_over_10000_updates(build, update):
    gen = torch.Generator().manual_seed(0)
    batches_ND = torch.randn(10_000, 4, 8, generator=gen)
    indices_NK = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    acc = build()
    sizes = {}
    for i in range(10_000):
        update(acc, i, batches_ND[i], indices_NK)
        if i + 1 in (100, 10_000):
            sizes[i + 1] = _state_numel(acc)
    assert sizes[100] == sizes[10_000] > 0


def test_topk_sparse_never_keeps_a_masked_minus_inf_slot():
    examples = TopKExamples(3, num_features=4)
    values = torch.tensor([[2.0, float("-inf")], [float("-inf"), float("-inf")]])
    indices = torch.tensor([[0, 1], [0, 1]])
    examples.update_sparse(values, indices, torch.tensor([10, 11]))
    assert examples.row_ids()[0].tolist() == [10, -1, -1], "one real firing, no masked rows"
    assert examples.row_ids()[1].tolist() == [-1, -1, -1]
