"""The compiled top-k kernel selects exactly what `torch.topk` selects, whatever the rows."""

from __future__ import annotations

import numba  # noqa: F401  (a required dependency: a broken install must fail, not skip)
import pytest
import torch

from pipeline.sae import topk_kernel
from pipeline.sae.select import group_size, topk_rows


def test_the_kernel_is_available_with_numba_installed():
    assert topk_kernel.available()


def assert_same_selection(pre: torch.Tensor, k: int) -> None:
    indices = topk_kernel.topk_indices(pre, k, group_size(pre.shape[1], k))
    assert indices.shape == (pre.shape[0], k)
    expected = pre.topk(k, dim=1).values
    chosen = pre.gather(1, indices).sort(1, descending=True).values
    assert torch.equal(chosen, expected)
    assert (indices.sort(1).values.diff(dim=1) > 0).all(), "k distinct latents per row"


@pytest.mark.parametrize(("num_latents", "k"), [(1536, 32), (6144, 64), (512, 8), (1000, 7)])
def test_kernel_matches_torch_topk_on_gaussian_rows(num_latents, k):
    generator = torch.Generator().manual_seed(k)
    assert_same_selection(torch.randn(500, num_latents, generator=generator), k)


def test_kernel_is_exact_when_row_scales_jump_between_rows():
    """Each row's threshold guess comes from the previous row: make every guess wrong."""
    generator = torch.Generator().manual_seed(1)
    pre = torch.randn(400, 1536, generator=generator)
    scales = torch.tensor([1e-3, 1e3, 1.0, -5.0]).repeat(100).unsqueeze(1)
    shifts = torch.tensor([0.0, -100.0, 50.0, 3.0]).repeat(100).unsqueeze(1)
    assert_same_selection(pre * scales + shifts, 32)


def test_kernel_is_exact_with_ties_and_infinities():
    generator = torch.Generator().manual_seed(2)
    pre = torch.randn(300, 1536, generator=generator).round()  # many ties
    pre[::7, :100] = float("inf")
    pre[::5, 200:1536] = float("-inf")
    pre[3] = 0.0  # a row that is one big tie
    assert_same_selection(pre, 32)


def test_rows_with_nan_are_handed_to_torch_topk():
    pre = torch.randn(200, 1536)
    pre[10, 5] = float("nan")
    pre[11] = float("nan")
    indices = topk_kernel.topk_indices(pre, 32, group_size(1536, 32))
    expected = pre.topk(32, dim=1, sorted=False).indices
    for row in (10, 11):
        assert set(indices[row].tolist()) == set(expected[row].tolist())
    clean = torch.ones(200, dtype=torch.bool)
    clean[10:12] = False
    assert torch.equal(
        pre[clean].gather(1, indices[clean]).sort(1).values,
        pre[clean].topk(32, dim=1).values.sort(1).values,
    )


def test_kernel_handles_no_rows_and_strided_input():
    assert topk_kernel.topk_indices(torch.empty(0, 1536), 32, 8).shape == (0, 32)
    wide = torch.randn(100, 3072)
    assert_same_selection(wide[:, ::2], 32)  # not contiguous


def test_topk_rows_uses_the_kernel_for_float32_cpu_and_keeps_gradients():
    pre = torch.randn(50, 1536, requires_grad=True)
    values, indices = topk_rows(pre, 32)
    assert torch.equal(values, pre.detach().topk(32, dim=1).values)
    values.sum().backward()
    assert torch.equal(pre.grad, torch.zeros(50, 1536).scatter_(1, indices, 1.0))


def test_one_thread_runs_the_serial_kernel_with_the_same_result():
    pre = torch.randn(300, 1536)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = topk_kernel.topk_indices(pre, 32, group_size(1536, 32))
    finally:
        torch.set_num_threads(threads)
    chosen = pre.gather(1, serial).sort(1).values
    assert torch.equal(chosen, pre.topk(32, dim=1).values.sort(1).values)
