"""The SAE itself, without a model: formulas, sparse codes, the fast top-k, configs."""

from __future__ import annotations

import pytest
import torch

from pipeline.sae import JumpReluSae, ReluSae, SaeConfig, TopKSae
from pipeline.sae.select import group_size, topk_rows


@pytest.mark.parametrize(("num_latents", "k"), [(1536, 32), (512, 8), (128, 4), (1000, 7), (60, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_topk_rows_selects_the_same_values_as_torch_topk(num_latents, k, ties):
    generator = torch.Generator().manual_seed(num_latents)
    pre = torch.randn(300, num_latents, generator=generator)
    if ties:
        pre = pre.round()
    expected = pre.topk(k, dim=1).values
    values, indices = topk_rows(pre, k)
    assert torch.equal(values, expected)
    assert torch.equal(pre.gather(1, indices), values)
    assert (indices.sort(1).values.diff(dim=1) > 0).all()  # k distinct latents
    unsorted_values, _ = topk_rows(pre, k, sorted=False)
    assert torch.equal(unsorted_values.sort(1, descending=True).values, expected)


def test_topk_rows_uses_two_stages_only_where_they_are_cheaper():
    assert group_size(1536, 32) is not None
    assert group_size(60, 30) is None


def test_topk_rows_passes_gradients_to_the_selected_entries():
    pre = torch.randn(5, 512, requires_grad=True)
    values, indices = topk_rows(pre, 8)
    values.sum().backward()
    expected = torch.zeros(5, 512).scatter_(1, indices, 1.0)
    assert torch.equal(pre.grad, expected)


def test_topk_encode_follows_the_formula_and_keeps_k_codes():
    torch.manual_seed(0)
    sae = TopKSae(n_latents=200, n_inputs=24, k=5)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(40, 24)
    pre = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    top = pre.topk(5, dim=1)
    expected = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    with torch.no_grad():
        codes = sae.encode(x)
        torch.testing.assert_close(codes, expected)
        assert torch.equal((codes != 0).sum(1), torch.full((40,), 5))
        values, indices = sae.encode_sparse(x)
        assert values.shape == indices.shape == (40, 5)
        assert torch.equal(torch.zeros_like(codes).scatter(1, indices, values), codes)
        torch.testing.assert_close(sae.decode(codes), codes @ sae.W_dec + sae.b_dec)
        torch.testing.assert_close(sae.decode_sparse(values, indices), sae.decode(codes))


def test_encode_keeps_leading_dimensions():
    sae = TopKSae(n_latents=32, n_inputs=8, k=3)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert sae.encode(x).shape == (2, 5, 32)
        assert sae.encode_sparse(x)[0].shape == (2, 5, 3)
        assert sae.forward(x).shape == (2, 5, 8)


def test_fresh_sae_has_unit_norm_decoder_rows_and_a_tied_encoder():
    sae = TopKSae(n_latents=64, n_inputs=16, k=4)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    assert torch.equal(sae.W_enc, sae.W_dec.T)


@pytest.mark.parametrize("cls", [ReluSae, JumpReluSae])
def test_relu_kinds_hand_out_every_nonzero_code_sparsely(cls):
    torch.manual_seed(0)
    sae = cls(n_latents=64, n_inputs=16)
    if cls is JumpReluSae:
        with torch.no_grad():
            sae.threshold.uniform_(0, 0.3)
    x = torch.randn(20, 16)
    with torch.no_grad():
        dense = sae.encode(x)
        values, indices = sae.encode_sparse(x)
    assert values.shape[1] == int((dense > 0).sum(1).max())
    assert torch.equal(torch.zeros_like(dense).scatter(1, indices, values), dense)


def test_jumprelu_zeroes_codes_at_or_below_the_threshold():
    sae = JumpReluSae(n_latents=4, n_inputs=4)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.threshold.fill_(0.5)
    codes = sae.encode(torch.tensor([[0.2, 0.5, 0.7, -1.0]]))
    assert codes.tolist() == [[0.0, 0.0, pytest.approx(0.7), 0.0]]


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="k must be"):
        TopKSae(n_latents=8, n_inputs=4, k=9)
    with pytest.raises(ValueError, match="architecture"):
        SaeConfig(architecture="gated", n_inputs=4, n_latents=8)
    with pytest.raises(ValueError, match="n_inputs"):
        SaeConfig(architecture="standard", n_inputs=0, n_latents=8)
    with pytest.raises(ValueError, match="only for topk"):
        SaeConfig(architecture="standard", n_inputs=4, n_latents=8, k=2)


def test_wrong_input_width_is_a_value_error():
    with pytest.raises(ValueError, match="n_inputs=8"):
        TopKSae(n_latents=32, n_inputs=8, k=3).encode(torch.randn(3, 9))
