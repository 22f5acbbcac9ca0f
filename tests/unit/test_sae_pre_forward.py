"""SAEs on a layer's input (PRE_FORWARD): the residual stream on its way into a block."""

from __future__ import annotations

import pytest
import torch

from pipeline.sae import TopKSae


def fresh_sae() -> TopKSae:
    torch.manual_seed(0)
    return TopKSae(n_latents=128, n_inputs=64, k=4)


def test_on_the_input_of_block_2_it_sees_what_block_1_outputs(tiny_lm):
    on_output, on_input = fresh_sae(), fresh_sae()
    text = ["The quick brown fox jumps over the lazy dog."]
    output_id = tiny_lm.attach_sae(on_output, "layer_1")
    base, _ = tiny_lm.inference.execute_inference(text)
    on_output.concepts.set_concept(7, 3.0)
    edited_on_output, _ = tiny_lm.inference.execute_inference(text)
    tiny_lm.detach_sae(output_id)

    tiny_lm.attach_sae(on_input, "layer_2", hook_type="pre_forward")
    try:
        plain, _ = tiny_lm.inference.execute_inference(text)
        assert torch.equal(plain.logits, base.logits), "an unedited SAE changes nothing"
        torch.testing.assert_close(
            on_input.get_captured().to_dense(), on_output.get_captured().to_dense()
        )
        on_input.concepts.set_concept(7, 3.0)
        edited_on_input, _ = tiny_lm.inference.execute_inference(text)
    finally:
        tiny_lm.layers.unregister_hook(on_input)
    assert not torch.equal(edited_on_input.logits, base.logits)
    torch.testing.assert_close(edited_on_input.logits, edited_on_output.logits)


def test_the_width_checked_is_the_input_width(tiny_lm):
    """An MLP's output projection takes 4d and gives d: each hook type checks its side."""
    wide = TopKSae(n_latents=512, n_inputs=256, k=4)
    hook_id = tiny_lm.attach_sae(wide, "transformer.h.0.mlp.c_proj", hook_type="pre_forward")
    tiny_lm.detach_sae(hook_id)
    with pytest.raises(ValueError, match="outputs width 64"):
        tiny_lm.attach_sae(TopKSae(n_latents=512, n_inputs=256, k=4), "transformer.h.0.mlp.c_proj")
    with pytest.raises(ValueError, match="takes width 256"):
        tiny_lm.attach_sae(fresh_sae(), "transformer.h.0.mlp.c_proj", hook_type="pre_forward")
