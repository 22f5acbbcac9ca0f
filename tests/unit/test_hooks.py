"""Behaviour of the hook API on a tiny GPT-2 and on the real MiniLM."""

from __future__ import annotations

import pytest
import torch

from pipeline import (
    Controller,
    FunctionController,
    HookError,
    HookType,
    LanguageModel,
    LayerActivationDetector,
    ModelInputDetector,
    ModelOutputDetector,
)

TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog."]


def logits_of(lm, texts=TEXTS, **kwargs):
    outputs, _ = lm.inference.execute_inference(texts, **kwargs)
    return (
        outputs.logits
        if hasattr(outputs, "logits") and outputs.logits is not None
        else outputs.last_hidden_state
    )


@pytest.fixture(params=["tiny_lm", "minilm"])
def any_lm(request):
    return request.getfixturevalue(request.param)


def test_forward_controller_changes_logits(any_lm):
    baseline = logits_of(any_lm)
    with any_lm.layers.hooks(FunctionController("layer_1", lambda x: x * 3.0)):
        changed = logits_of(any_lm)
    assert not torch.allclose(baseline, changed)


def test_pre_forward_controller_replaces_first_input(tiny_lm):
    seen = LayerActivationDetector("transformer.h.2", hook_type=HookType.PRE_FORWARD)
    replacement = FunctionController(
        "transformer.h.2", lambda x: torch.zeros_like(x), hook_type=HookType.PRE_FORWARD
    )
    block_output = LayerActivationDetector("transformer.h.2")
    with tiny_lm.layers.hooks(replacement, seen, block_output):
        tiny_lm.inference.execute_inference(TEXTS)
    # The detector registered after the controller sees the zeroed input.
    assert torch.count_nonzero(seen.get_captured()) == 0
    # And the block really ran on zeros: compare with calling it by hand.
    block = tiny_lm.layers.get("transformer.h.2")
    zeros = torch.zeros_like(block_output.get_captured())
    with torch.no_grad():
        by_hand = block(zeros)
    by_hand = by_hand[0] if isinstance(by_hand, tuple) else by_hand
    torch.testing.assert_close(block_output.get_captured(), by_hand)


def test_tuple_output_keeps_other_elements(tiny_lm):
    # GPT-2 attention returns a tuple (hidden, weights): only the hidden state changes.
    det = LayerActivationDetector("transformer.h.0.attn")
    with tiny_lm.layers.hooks(FunctionController("transformer.h.0.attn", lambda x: x + 1.0), det):
        tiny_lm.inference.execute_inference(TEXTS)
    with tiny_lm.layers.hooks(plain := LayerActivationDetector("transformer.h.0.attn")):
        tiny_lm.inference.execute_inference(TEXTS)
    torch.testing.assert_close(det.get_captured(), plain.get_captured() + 1.0)


@pytest.mark.parametrize("how", ["disabled", "unregistered"])
def test_inactive_hook_leaves_outputs_bit_identical(any_lm, how):
    baseline = logits_of(any_lm)
    controller = FunctionController("layer_0", lambda x: x * 5.0)
    hook_id = any_lm.layers.register_hook("layer_0", controller)
    if how == "disabled":
        controller.disable()
    else:
        any_lm.layers.unregister_hook(hook_id)
    assert torch.equal(baseline, logits_of(any_lm))
    controller.enable()
    if how == "disabled":
        assert not torch.equal(baseline, logits_of(any_lm))


def test_detectors_leave_outputs_bit_identical(any_lm):
    baseline = logits_of(any_lm)
    detectors = [LayerActivationDetector(f"layer_{i}") for i in range(any_lm.layers.num_blocks)]
    with any_lm.layers.hooks(*detectors):
        assert torch.equal(baseline, logits_of(any_lm))


def test_cascading_controllers_equal_both_transforms_by_hand(tiny_lm):
    early = FunctionController("layer_0", lambda x: x * 1.2)
    late = FunctionController("layer_3", lambda x: x * 0.8)
    with tiny_lm.layers.hooks(early, late):
        cascaded = logits_of(tiny_lm)

    # By hand: run the blocks ourselves, applying each transform after its block.
    encodings = tiny_lm.inference.encode(TEXTS)
    model = tiny_lm.model
    with torch.no_grad():
        ids, mask = encodings["input_ids"], encodings["attention_mask"]
        hidden = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(ids.shape[1]))
        # Causal model with right padding: real tokens never attend to padding.
        for i, block in enumerate(model.transformer.h):
            out = block(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
            hidden = hidden * 1.2 if i == 0 else hidden * 0.8 if i == 3 else hidden
        by_hand = model.lm_head(model.transformer.ln_f(hidden))
    real = mask.bool()
    torch.testing.assert_close(cascaded[real], by_hand[real], rtol=1e-4, atol=1e-4)


def test_late_controller_reads_early_detector_of_same_pass(tiny_lm):
    seen = []

    class Reader(Controller):
        def __init__(self, layer, reference):
            super().__init__(layer_signature=layer)
            self.reference = reference

        def modify_activations(self, module, inputs, output):
            seen.append(self.reference.get_captured().clone())
            return None

    early = LayerActivationDetector("layer_0")
    with tiny_lm.layers.hooks(early, Reader("layer_2", early)):
        tiny_lm.inference.execute_inference(["first batch text"])
        tiny_lm.inference.execute_inference(["a different, longer second batch of text"])
    assert seen[0].shape != seen[1].shape
    assert torch.equal(seen[1], early.get_captured())


def test_name_and_index_of_one_module_are_one_layer(tiny_lm):
    name = "transformer.h.1.mlp"
    index = tiny_lm.layers.names().index(name)
    assert tiny_lm.layers.resolve(index) == tiny_lm.layers.resolve(name)
    assert tiny_lm.layers.resolve("layer_1") == "transformer.h.1"
    by_name, by_index = LayerActivationDetector(name), LayerActivationDetector(index)
    with tiny_lm.layers.hooks(by_name, by_index):
        tiny_lm.inference.execute_inference(TEXTS)
    assert torch.equal(by_name.get_captured(), by_index.get_captured())


def test_layer_n_is_the_block_in_every_family(tiny_lm, minilm):
    assert tiny_lm.layers.resolve("layer_3") == "transformer.h.3"
    assert minilm.layers.resolve("layer_5") == "encoder.layer.5"


def test_padding_excluded_when_asked(any_lm):
    det = LayerActivationDetector("layer_1", exclude_padding=True)
    full = LayerActivationDetector("layer_1")
    with any_lm.layers.hooks(det, full):
        _, encodings = any_lm.inference.execute_inference(TEXTS)
    mask = encodings["attention_mask"].bool()
    assert mask.sum() < mask.numel(), "the batch must contain padding for this test"
    assert det.get_captured().shape == (int(mask.sum()), full.get_captured().shape[-1])
    assert torch.equal(det.get_captured(), full.get_captured()[mask])


def test_padding_does_not_change_real_token_activations(any_lm):
    det = LayerActivationDetector("layer_2", exclude_padding=True)
    with any_lm.layers.hooks(det):
        any_lm.inference.execute_inference([TEXTS[0]])
        alone = det.get_captured()
        any_lm.inference.execute_inference(TEXTS)
        padded = det.get_captured()[: alone.shape[0]]
    torch.testing.assert_close(alone, padded, rtol=1e-4, atol=1e-5)


def test_bf16_model_works_with_float32_detector(tiny_gpt2_path):
    lm = LanguageModel.from_pretrained(tiny_gpt2_path, dtype="bfloat16")
    det = LayerActivationDetector("layer_1", dtype=torch.float32)
    with lm.layers.hooks(det, FunctionController("layer_0", lambda x: x.float() * 1.1)):
        outputs, _ = lm.inference.execute_inference(TEXTS)
    assert lm.dtype == torch.bfloat16
    assert det.get_captured().dtype == torch.float32
    assert outputs.logits.dtype == torch.bfloat16


def test_hooks_removed_after_with_block_even_on_error(tiny_lm):
    baseline = logits_of(tiny_lm)
    with (
        pytest.raises(RuntimeError, match="boom"),
        tiny_lm.layers.hooks(FunctionController("layer_0", lambda x: x * 9)),
    ):
        raise RuntimeError("boom")
    assert tiny_lm.layers.registered() == []
    assert torch.equal(baseline, logits_of(tiny_lm))


def test_exception_in_hook_is_hook_error_with_cause(tiny_lm):
    def broken(x):
        raise KeyError("missing")

    controller = FunctionController("layer_0", broken)
    with tiny_lm.layers.hooks(controller), pytest.raises(HookError) as info:
        tiny_lm.inference.execute_inference(TEXTS)
    assert info.value.hook_id == controller.id
    assert info.value.hook_type is HookType.FORWARD
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value.original, KeyError)


def test_wrong_shape_replacement_names_both_shapes(tiny_lm):
    with (
        tiny_lm.layers.hooks(FunctionController("layer_0", lambda x: x[:, :1, :])),
        pytest.raises(HookError, match=r"shape \(2, 1, 64\).*shape \(2, \d+, 64\)"),
    ):
        tiny_lm.inference.execute_inference(TEXTS)


def test_unknown_layer_suggests_closest_names(tiny_lm):
    with pytest.raises(ValueError, match="transformer.h.0.attn"):
        tiny_lm.layers.resolve("transformer.h.0.atn")
    with pytest.raises(ValueError, match="layer_0 .. layer_3"):
        tiny_lm.layers.resolve("layer_12")
    with pytest.raises(ValueError, match="closest"):
        tiny_lm.layers.register_hook("transfomer.h.1", LayerActivationDetector())


def test_with_controllers_false_disables_for_that_call_only(tiny_lm):
    baseline = logits_of(tiny_lm)
    det = LayerActivationDetector("layer_2")
    with tiny_lm.layers.hooks(FunctionController("layer_0", lambda x: x * 4), det):
        assert torch.equal(baseline, logits_of(tiny_lm, with_controllers=False))
        assert det.get_captured() is not None
        assert not torch.equal(baseline, logits_of(tiny_lm))


def test_with_controllers_false_restored_when_call_raises(tiny_lm):
    baseline = logits_of(tiny_lm)
    with tiny_lm.layers.hooks(FunctionController("layer_0", lambda x: x * 4)):
        with pytest.raises(ValueError):
            tiny_lm.inference.execute_inference([], with_controllers=False)
        assert tiny_lm.context.controllers_enabled
        assert not torch.equal(baseline, logits_of(tiny_lm))


def test_model_input_and_output_detectors(any_lm):
    inputs, outputs_det = ModelInputDetector(), ModelOutputDetector()
    with any_lm.layers.hooks(inputs, outputs_det):
        outputs, encodings = any_lm.inference.execute_inference(TEXTS)
    assert torch.equal(inputs.tensor_metadata["input_ids"], encodings["input_ids"])
    assert torch.equal(inputs.tensor_metadata["attention_mask"], encodings["attention_mask"])
    assert torch.equal(
        inputs.tensor_metadata["special_tokens_mask"], encodings["special_tokens_mask"]
    )
    expected = (
        outputs.logits
        if outputs_det.tensor_metadata["key"] == "logits"
        else outputs.last_hidden_state
    )
    assert torch.equal(outputs_det.get_captured(), expected)


def test_minilm_special_tokens_flagged(minilm):
    _, encodings = minilm.inference.execute_inference(["Hello"])
    ids = encodings["input_ids"][0].tolist()
    assert ids[0] == minilm.tokenizer.cls_token_id and ids[-1] == minilm.tokenizer.sep_token_id
    assert encodings["special_tokens_mask"][0].tolist() == [1] + [0] * (len(ids) - 2) + [1]


def test_tokenizer_not_mutated(tiny_lm):
    before = (tiny_lm.tokenizer.pad_token, tiny_lm.tokenizer.padding_side, len(tiny_lm.tokenizer))
    tiny_lm.inference.execute_inference(TEXTS)
    assert (
        tiny_lm.tokenizer.pad_token,
        tiny_lm.tokenizer.padding_side,
        len(tiny_lm.tokenizer),
    ) == before


def test_too_long_text_is_a_clear_error(tiny_lm):
    text = "word " * 1000
    with pytest.raises(ValueError, match="max_length"):
        tiny_lm.inference.execute_inference([text])
    outputs, _ = tiny_lm.inference.execute_inference([text], max_length=32)
    assert outputs.logits.shape[1] == 32


def test_stop_after_skips_deeper_layers(tiny_lm):
    early, late = LayerActivationDetector("layer_1"), LayerActivationDetector("layer_3")
    encodings = tiny_lm.inference.encode(TEXTS)
    with tiny_lm.layers.hooks(early, late):
        result = tiny_lm.inference.forward_ids(
            encodings["input_ids"], encodings["attention_mask"], stop_after="layer_1"
        )
    assert result is None
    assert early.get_captured() is not None and late.get_captured() is None


def test_registering_same_hook_twice_is_refused(tiny_lm):
    det = LayerActivationDetector("layer_0")
    tiny_lm.layers.register_hook("layer_0", det)
    with pytest.raises(ValueError, match="already registered"):
        tiny_lm.layers.register_hook("layer_1", det)
