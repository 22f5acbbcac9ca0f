"""SAEs as hooks on a tiny GPT-2: detection, concept edits, splice, dtypes, attach checks."""

from __future__ import annotations

import pytest
import torch

from pipeline import LanguageModel, LayerActivationDetector
from pipeline.sae import JumpReluSae, ReluSae, TopKSae

TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog", "def f(x): return x"]
LAYER = "layer_1"


def logits(lm, texts=TEXTS, **kwargs):
    outputs, _ = lm.inference.execute_inference(texts, **kwargs)
    return outputs.logits


def make_sae(kind: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    if kind == "topk":
        return TopKSae(n_latents=256, n_inputs=64, k=8, **kwargs)
    if kind == "relu":
        return ReluSae(n_latents=256, n_inputs=64, **kwargs)
    sae = JumpReluSae(n_latents=256, n_inputs=64, **kwargs)
    with torch.no_grad():
        sae.threshold.fill_(0.05)
    return sae


def around_sae(lm, sae, texts=TEXTS, **kwargs):
    """(layer output before the SAE, after it, attention mask) for one batch."""
    before = LayerActivationDetector(LAYER)
    after = LayerActivationDetector(LAYER)
    lm.layers.register_hook(LAYER, before)
    lm.attach_sae(sae, layer_signature=LAYER)
    lm.layers.register_hook(LAYER, after)
    try:
        _, encodings = lm.inference.execute_inference(texts, **kwargs)
    finally:
        for hook in (before, sae, after):
            lm.layers.unregister_hook(hook)
    return before.get_captured(), after.get_captured(), encodings["attention_mask"].bool()


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_attached_sae_without_edits_leaves_logits_bit_identical(tiny_lm, kind):
    baseline = logits(tiny_lm)
    sae = make_sae(kind)
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    assert torch.equal(logits(tiny_lm), baseline)
    assert sae.get_captured() is not None


def test_detach_sae_removes_the_hook(tiny_lm):
    baseline = logits(tiny_lm)
    sae = make_sae("topk")
    hook_id = tiny_lm.attach_sae(sae, layer_signature=LAYER)
    sae.concepts.set_concept(3, 5.0)
    assert not torch.equal(logits(tiny_lm), baseline)
    tiny_lm.detach_sae(hook_id)
    assert torch.equal(logits(tiny_lm), baseline)


def test_topk_codes_have_exactly_k_nonzeros_per_real_token(tiny_lm):
    sae = make_sae("topk")
    x, _, mask = around_sae(tiny_lm, sae)
    codes = sae.get_captured()
    assert codes.values_NK.shape == (int(mask.sum()), 8)
    assert torch.equal((codes.values_NK > 0).sum(1), torch.full((len(codes),), 8))
    assert torch.equal((sae.encode(x[mask]) != 0).sum(1), torch.full((len(codes),), 8))


def test_codes_exclude_padding_and_map_back_to_batch_and_position(tiny_lm):
    sae = make_sae("topk")
    x, _, mask = around_sae(tiny_lm, sae)
    codes = sae.get_captured()
    assert not mask.all()  # the batch really is padded
    assert torch.equal(
        mask[codes.batch_N, codes.position_N], torch.ones(len(codes), dtype=torch.bool)
    )
    torch.testing.assert_close(codes.to_dense(), sae.encode(x[codes.batch_N, codes.position_N]))


def test_scaling_a_latent_changes_the_output_only_along_its_decoder_row(tiny_lm):
    sae = make_sae("topk")
    around_sae(tiny_lm, sae)
    plain_codes = sae.get_captured()
    latent = int(plain_codes.indices_NK[0, 0])  # active on the first token
    sae.concepts.manipulate_concept(neuron_idx=latent, scale=3.0)
    x, edited, mask = around_sae(tiny_lm, sae)
    codes = sae.get_captured()
    assert torch.equal(codes.values_NK, plain_codes.values_NK)  # every latent's code as before
    assert torch.equal(codes.indices_NK, plain_codes.indices_NK)
    z_N = codes.latent(latent)
    expected = (2.0 * z_N)[:, None] * sae.W_dec[latent].detach()
    torch.testing.assert_close(edited[mask] - x[mask], expected, atol=1e-5, rtol=1e-4)
    assert (z_N == 0).any() and (z_N > 0).any()  # so both cases were exercised


def test_scaled_latent_changes_logits(tiny_lm):
    baseline = logits(tiny_lm)
    sae = make_sae("topk")
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    logits(tiny_lm)
    sae.concepts.manipulate_concept(neuron_idx=int(sae.get_captured().indices_NK[0, 0]), scale=4.0)
    assert not torch.equal(logits(tiny_lm), baseline)
    sae.concepts.reset()
    assert torch.equal(logits(tiny_lm), baseline)


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_set_and_scale_several_latents_add_each_latents_change(tiny_lm, kind):
    sae = make_sae(kind)
    sae.concepts.manipulate_concepts({5: 2.0, 7: 0.0})
    sae.concepts.set_concepts({11: 1.5, 5: 0.25})  # the last edit of latent 5 wins
    assert sae.concepts.edits == {5: ("set", 0.25), 7: ("scale", 0.0), 11: ("set", 1.5)}
    x, edited, mask = around_sae(tiny_lm, sae)
    dense = sae.get_captured().to_dense()
    change = torch.zeros_like(dense)
    change[:, 5] = 0.25 - dense[:, 5]
    change[:, 7] = -dense[:, 7]
    change[:, 11] = 1.5 - dense[:, 11]
    expected = change @ sae.W_dec.detach()
    torch.testing.assert_close(edited[mask] - x[mask], expected, atol=1e-5, rtol=1e-4)


def test_without_controllers_output_is_identical_and_codes_are_captured(tiny_lm):
    baseline = logits(tiny_lm)
    sae = make_sae("topk")
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    sae.concepts.set_concept(2, 10.0)
    assert torch.equal(logits(tiny_lm, with_controllers=False), baseline)
    assert sae.get_captured() is not None and len(sae.get_captured()) > 0
    assert not torch.equal(logits(tiny_lm), baseline)


def test_splice_replaces_the_output_with_the_reconstruction(tiny_lm):
    sae = make_sae("topk", splice=True)
    x, spliced, mask = around_sae(tiny_lm, sae)
    torch.testing.assert_close(spliced[mask], sae.forward(x[mask]).detach(), atol=1e-5, rtol=1e-5)


def test_width_mismatch_is_a_value_error_at_attach(tiny_lm):
    watcher = LayerActivationDetector("layer_0")
    tiny_lm.layers.register_hook("layer_0", watcher)
    sae = TopKSae(n_latents=64, n_inputs=768, k=4)
    with pytest.raises(ValueError, match=r"n_inputs=768.*'layer_2'.*width 64"):
        tiny_lm.attach_sae(sae, layer_signature="layer_2")
    assert tiny_lm.layers.registered() == [watcher]
    assert watcher.get_captured() is None  # the width probe ran with the other hooks off
    assert watcher.enabled


def test_float32_sae_on_bfloat16_model(tiny_gpt2_path):
    lm = LanguageModel.from_pretrained(tiny_gpt2_path, dtype="bfloat16")
    baseline = logits(lm)
    sae = make_sae("topk")
    x, _, mask = around_sae(lm, sae)
    assert x.dtype == torch.bfloat16
    assert sae.get_captured().values_NK.dtype == torch.float32
    torch.testing.assert_close(sae.get_captured().to_dense(), sae.encode(x[mask].float()))
    lm.attach_sae(sae, layer_signature=LAYER)
    assert torch.equal(logits(lm), baseline)
    sae.concepts.set_concept(1, 3.0)
    edited = logits(lm)
    assert edited.dtype == torch.bfloat16 and not torch.equal(edited, baseline)


def test_concept_edits_reject_unknown_latents_and_bad_numbers():
    sae = make_sae("topk")
    with pytest.raises(ValueError, match="neuron_idx"):
        sae.concepts.manipulate_concept(neuron_idx=256, scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        sae.concepts.manipulate_concept(neuron_idx=1, scale=float("nan"))
    assert not sae.concepts.active


def test_captured_codes_follow_the_latest_batch_whenever_they_are_read(tiny_lm):
    """The hook keeps a batch's codes on their device and copies them to the CPU when
    read: whether or not an earlier batch was read, the codes are the last batch's."""
    sae = make_sae("topk")
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    detector = LayerActivationDetector(LAYER, exclude_padding=True)
    tiny_lm.layers.register_hook(LAYER, detector)
    try:
        tiny_lm.inference.execute_inference(TEXTS[:1])
        first = sae.get_captured()
        assert first is sae.get_captured()  # one copy per batch
        tiny_lm.inference.execute_inference(TEXTS[1:])  # not read after this one
        tiny_lm.inference.execute_inference(TEXTS)
        latest = sae.get_captured()
    finally:
        tiny_lm.detach_sae(sae)
        tiny_lm.layers.unregister_hook(detector)
    with torch.no_grad():
        expected = sae.encode(detector.get_captured())
    assert latest is not first and latest.values_NK.device.type == "cpu"
    assert len(latest) == detector.get_captured().shape[0]
    assert torch.allclose(latest.to_dense(), expected, atol=1e-6)
    sae.clear_captured()
    assert sae.get_captured() is None
