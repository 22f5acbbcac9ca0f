"""The library versions of the seed's patterns: pipeline, conditional, token position, threshold."""

from __future__ import annotations

import torch

from pipeline import (
    ActivationThresholdController,
    ConditionalPipeline,
    LayerActivationDetector,
    PipelineController,
    TokenPositionController,
)

TEXTS = ["Hello, world!", "A second and longer text for the batch."]


def captured_after(lm, controller, layer="layer_1"):
    detector = LayerActivationDetector(layer)
    with lm.layers.hooks(controller, detector):
        lm.inference.execute_inference(TEXTS)
    return detector.get_captured()


def clean(lm, layer="layer_1"):
    detector = LayerActivationDetector(layer)
    with lm.layers.hooks(detector):
        lm.inference.execute_inference(TEXTS)
    return detector.get_captured()


def test_pipeline_controller_applies_transforms_in_order(tiny_lm):
    out = captured_after(
        tiny_lm, PipelineController("layer_1", [lambda x: x + 1.0, lambda x: x * 3.0])
    )
    torch.testing.assert_close(out, (clean(tiny_lm) + 1.0) * 3.0)


def test_conditional_pipeline_picks_branch_by_condition(tiny_lm):
    base = clean(tiny_lm)
    yes = ConditionalPipeline(
        "layer_1", lambda x: x.abs().mean() > 0, [lambda x: x * 2.0], lambda x: x * 0.0
    )
    no = ConditionalPipeline("layer_1", lambda x: False, [lambda x: x * 2.0], lambda x: x * 0.0)
    torch.testing.assert_close(captured_after(tiny_lm, yes), base * 2.0)
    assert torch.count_nonzero(captured_after(tiny_lm, no)) == 0


def test_token_position_controller_touches_only_its_positions(tiny_lm):
    base = clean(tiny_lm)
    out = captured_after(
        tiny_lm, TokenPositionController("layer_1", [1, -1, 999], function=lambda x: x * 0.0)
    )
    assert torch.count_nonzero(out[:, 1]) == 0 and torch.count_nonzero(out[:, -1]) == 0
    torch.testing.assert_close(out[:, 0], base[:, 0])
    torch.testing.assert_close(out[:, 2:-1], base[:, 2:-1])


def test_threshold_controller_fires_only_above_threshold(tiny_lm):
    base = clean(tiny_lm)
    torch.testing.assert_close(
        captured_after(tiny_lm, ActivationThresholdController("layer_1", 1e9)), base
    )
    torch.testing.assert_close(
        captured_after(tiny_lm, ActivationThresholdController("layer_1", 0.0, scale=1.5)),
        base * 1.5,
    )
