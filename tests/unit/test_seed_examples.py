"""Every hook example of the seed page (advanced-hooks-patterns.txt), run as written.

Imports are adjusted to `pipeline`; the model is a 12-block GPT-2 (d=768) so the page's
layer names (`transformer.h.{0,5,10}.attn.c_attn`, `layer_0` .. `layer_10`) exist. Each
test then checks that the example does what the page says it does. The SAE section lives
in tests/unit/test_sae_seed.py.
"""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline import (
    Controller,
    Detector,
    FunctionController,
    HookType,
    LanguageModel,
    LayerActivationDetector,
)


@pytest.fixture(scope="module")
def lm(seed_gpt2_path):
    return LanguageModel.from_pretrained(seed_gpt2_path)


def logits(lm, texts=("Hello, world!",)):
    outputs, _ = lm.inference.execute_inference(list(texts))
    return outputs.logits


def test_sequential_layer_processing(lm, capsys):
    # Register hooks on multiple layers
    detectors = {}
    for i in [0, 5, 10]:
        layer_name = f"transformer.h.{i}.attn.c_attn"
        det = LayerActivationDetector(layer_name)
        detectors[i] = det
        lm.layers.register_hook(layer_name, det)
    # Process activations sequentially
    outputs, encodings = lm.inference.execute_inference(["Hello, world!"])
    # Analyze across layers
    for i, det in detectors.items():
        acts = det.get_captured()
        print(f"Layer {i}: mean={acts.mean().item()}")

    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["Layer 0", "Layer 5", "Layer 10"]
    seq_len = encodings["input_ids"].shape[1]
    assert all(d.get_captured().shape == (1, seq_len, 3 * 768) for d in detectors.values())
    for det in detectors.values():
        lm.layers.unregister_hook(det.id)


def test_cascading_interventions(lm):
    baseline = logits(lm)
    # Modify early layer, then late layer
    early_controller = FunctionController("layer_0", lambda x: x * 1.2)
    late_controller = FunctionController("layer_10", lambda x: x * 0.8)
    hook1 = lm.layers.register_hook("layer_0", early_controller)
    hook2 = lm.layers.register_hook("layer_10", late_controller)
    # Both modifications apply in sequence
    outputs, encodings = lm.inference.execute_inference(["Hello, world!"])
    lm.layers.unregister_hook(hook1)
    lm.layers.unregister_hook(hook2)

    assert not torch.allclose(outputs.logits, baseline)
    # Each one alone gives something else: both applied.
    with lm.layers.hooks(FunctionController("layer_0", lambda x: x * 1.2)):
        early_only = logits(lm)
    assert not torch.allclose(outputs.logits, early_only)
    assert torch.equal(logits(lm), baseline)


class CoordinatedController(Controller):
    """Controller that uses information from other layers."""

    def __init__(self, layer_signature, reference_detector):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.reference_detector = reference_detector

    def modify_activations(self, module, inputs, output):
        # Get activations from reference layer
        ref_activations = self.reference_detector.get_captured()
        if ref_activations is not None:
            # Modify based on reference layer
            scale = ref_activations.mean().item()
            return output * (1.0 + 0.1 * scale)
        return output


def test_cross_layer_communication(lm):
    # Setup
    ref_detector = LayerActivationDetector("layer_0")
    lm.layers.register_hook("layer_0", ref_detector)
    coordinated = CoordinatedController("layer_5", ref_detector)
    lm.layers.register_hook("layer_5", coordinated)

    probe = LayerActivationDetector("layer_5")
    lm.layers.register_hook("layer_5", probe)
    lm.inference.execute_inference(["Hello, world!"])
    for hook in (ref_detector, coordinated, probe):
        lm.layers.unregister_hook(hook.id)
    unmodified = LayerActivationDetector("layer_5")
    with lm.layers.hooks(unmodified):
        lm.inference.execute_inference(["Hello, world!"])
    scale = 1.0 + 0.1 * ref_detector.get_captured().mean().item()
    torch.testing.assert_close(probe.get_captured(), unmodified.get_captured() * scale)


class ConditionalController(Controller):
    """Only modifies when activation magnitude exceeds threshold."""

    def __init__(self, layer_signature, threshold=1.0):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.threshold = threshold

    def modify_activations(self, module, inputs, output):
        if output is None:
            return output
        # Check condition
        if output.abs().mean().item() > self.threshold:
            # Only modify if condition met
            return output * 1.5
        return output


def test_activation_based_condition(lm):
    baseline = logits(lm)
    with lm.layers.hooks(ConditionalController("layer_3", threshold=1e9)):
        assert torch.equal(logits(lm), baseline)
    with lm.layers.hooks(ConditionalController("layer_3", threshold=0.0)):
        assert not torch.allclose(logits(lm), baseline)


class TokenConditionalController(Controller):
    """Modifies only for specific token positions."""

    def __init__(self, layer_signature, token_indices):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.token_indices = set(token_indices)

    def modify_activations(self, module, inputs, output):
        if output is None:
            return output
        modified = output.clone()
        # Modify only specified token positions
        for idx in self.token_indices:
            if idx < modified.shape[1]:  # seq_len dimension
                modified[:, idx, :] *= 2.0
        return modified


def test_token_based_condition(lm):
    baseline = logits(lm)
    with lm.layers.hooks(TokenConditionalController("layer_3", token_indices=[2, 500])):
        changed = logits(lm)
    # Causal model: positions before 2 are untouched, from 2 on they change.
    assert torch.equal(changed[:, :2], baseline[:, :2])
    assert not torch.allclose(changed[:, 2:], baseline[:, 2:])


class BatchConditionalController(Controller):
    """Modifies only for certain batches."""

    def __init__(self, layer_signature):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.batch_count = 0

    def modify_activations(self, module, inputs, output):
        self.batch_count += 1
        # Modify only every 10th batch
        if self.batch_count % 10 == 0:
            return output * 1.5
        return output


def test_batch_based_condition(lm):
    baseline = logits(lm)
    changed = []
    with lm.layers.hooks(BatchConditionalController("layer_1")):
        for _ in range(20):
            changed.append(not torch.equal(logits(lm), baseline))
    assert [i + 1 for i, c in enumerate(changed) if c] == [10, 20]


class PipelineController(Controller):
    """Applies multiple transformations in sequence."""

    def __init__(self, layer_signature, transformations):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.transformations = transformations

    def modify_activations(self, module, inputs, output):
        result = output
        for transform in self.transformations:
            result = transform(result)
        return result


def test_pipeline_of_transformations(lm):
    # Usage
    pipeline = PipelineController(
        "layer_0",
        transformations=[
            lambda x: x * 1.2,  # Scale
            lambda x: torch.clamp(x, -2, 2),  # Clamp
            lambda x: (x - x.mean()) / (x.std() + 1e-8),  # Normalize
        ],
    )
    det = LayerActivationDetector("layer_0")
    with lm.layers.hooks(pipeline, det):
        lm.inference.execute_inference(["Hello, world!"])
    out = det.get_captured()
    assert abs(out.mean().item()) < 1e-4 and abs(out.std().item() - 1.0) < 1e-3


class ConditionalPipeline(Controller):
    """Applies different pipelines based on condition."""

    def __init__(self, layer_signature, condition_fn, pipeline_a, pipeline_b):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.condition_fn = condition_fn
        self.pipeline_a = pipeline_a
        self.pipeline_b = pipeline_b

    def modify_activations(self, module, inputs, output):
        if self.condition_fn(output):
            return self.pipeline_a(output)
        else:
            return self.pipeline_b(output)


@pytest.mark.parametrize("condition", [True, False])
def test_conditional_composition(lm, condition):
    det = LayerActivationDetector("layer_0")
    plain = LayerActivationDetector("layer_0")
    with lm.layers.hooks(plain):
        lm.inference.execute_inference(["Hello, world!"])
    controller = ConditionalPipeline(
        "layer_0", lambda x: condition, lambda x: x * 2, lambda x: x * 0
    )
    with lm.layers.hooks(controller, det):
        lm.inference.execute_inference(["Hello, world!"])
    expected = plain.get_captured() * (2 if condition else 0)
    torch.testing.assert_close(det.get_captured(), expected)


class SlowController(Controller):
    def modify_activations(self, module, inputs, output):
        return output.clone() * 2.0  # Unnecessary clone


class FastController(Controller):
    def modify_activations(self, module, inputs, output):
        return output * 2.0  # No clone needed


def test_slow_and_fast_controllers_agree(lm):
    baseline = logits(lm)
    results = []
    for controller in (SlowController(), FastController()):
        hook_id = lm.layers.register_hook("layer_0", controller)
        results.append(logits(lm))
        lm.layers.unregister_hook(hook_id)
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], baseline)


def test_batch_processing_optimization(lm):
    layers = ["layer_0", "layer_6"]
    dataset = [["Hello, world!"], ["Another batch", "of two texts"]]
    seen = []
    # Process multiple examples efficiently
    hook_ids = []
    try:
        # Register once
        for layer in layers:
            det = LayerActivationDetector(layer)
            hook_ids.append(lm.layers.register_hook(layer, det))
        # Process all batches
        for batch in dataset:
            outputs, encodings = lm.inference.execute_inference(batch)
            # Access data after batch
            seen.append(det.get_captured().shape[0])
    finally:
        # Cleanup once
        for hook_id in hook_ids:
            lm.layers.unregister_hook(hook_id)
    assert seen == [1, 2]
    assert lm.layers.registered() == []


class MemoryEfficientDetector(Detector):
    """Detector that clears old data automatically."""

    def __init__(self, layer_signature, max_batches=100):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.max_batches = max_batches
        self.batch_count = 0

    def process_activations(self, module, input, output):
        self.batch_count += 1
        # Clear old data periodically
        if self.batch_count > self.max_batches:
            self.tensor_metadata.clear()
            self.batch_count = 0
        # Store current batch (moved to CPU)
        if output is not None:
            self.tensor_metadata["activations"] = output.detach().cpu()


def test_memory_efficient_detector(lm):
    detector = MemoryEfficientDetector("layer_2", max_batches=3)
    with lm.layers.hooks(detector):
        for _ in range(5):
            lm.inference.execute_inference(["Hello, world!"])
    assert detector.batch_count == 1
    assert detector.get_captured().device.type == "cpu"
    # Clearing old data
    detector.clear_captured()
    detector.tensor_metadata.clear()
    assert detector.get_captured() is None


class LimitedAccumulator(Detector):
    """Only keeps last N batches."""

    def __init__(self, layer_signature, max_batches=10):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.max_batches = max_batches
        self.batches = []

    def process_activations(self, module, input, output):
        self.batches.append(output.detach().cpu())
        if len(self.batches) > self.max_batches:
            self.batches.pop(0)  # Remove oldest


def test_limited_accumulator(lm):
    acc = LimitedAccumulator("layer_1", max_batches=2)
    with lm.layers.hooks(acc):
        for text in ["one", "two two", "three three three"]:
            lm.inference.execute_inference([text])
    assert len(acc.batches) == 2


class LoggingController(Controller):
    """Logs all modifications for debugging."""

    def modify_activations(self, module, inputs, output):
        import logging

        logger = logging.getLogger(__name__)
        if output is not None:
            logger.debug(
                f"Hook {self.id}: shape={output.shape}, mean={output.mean().item()}, std={output.std().item()}"
            )
        return output * 2.0


def test_logging_controller(lm, caplog):
    controller = LoggingController()
    with caplog.at_level(logging.DEBUG, logger=__name__):
        hook_id = lm.layers.register_hook("layer_0", controller)
        try:
            lm.inference.execute_inference(["Hello, world!"])
        finally:
            lm.layers.unregister_hook(hook_id)
    assert any(f"Hook {controller.id}: shape=" in r.getMessage() for r in caplog.records)


class StatisticsController(Controller):
    """Tracks statistics about modifications."""

    def __init__(self, layer_signature):
        super().__init__(hook_type=HookType.FORWARD, layer_signature=layer_signature)
        self.modification_count = 0
        self.total_scale = 0.0

    def modify_activations(self, module, inputs, output):
        self.modification_count += 1
        scale = 2.0
        self.total_scale += scale
        return output * scale

    def get_stats(self):
        return {
            "modifications": self.modification_count,
            "avg_scale": self.total_scale / self.modification_count
            if self.modification_count > 0
            else 0,
        }


def test_statistics_controller(lm):
    stats = StatisticsController("layer_4")
    assert stats.get_stats() == {"modifications": 0, "avg_scale": 0}
    with lm.layers.hooks(stats):
        for _ in range(3):
            lm.inference.execute_inference(["Hello, world!"])
    assert stats.get_stats() == {"modifications": 3, "avg_scale": 2.0}


def test_pitfall_functions(lm):
    # ✅ Correct - returns new tensor; ✅ Correct - handles None
    def modify_fn(x):
        if x is None:
            return None
        return x * 2.0

    assert modify_fn(None) is None
    x = torch.ones(2)
    assert torch.equal(modify_fn(x), torch.full((2,), 2.0)) and torch.equal(x, torch.ones(2))
    # A None-returning controller keeps the original output.
    baseline = logits(lm)
    with lm.layers.hooks(FunctionController("layer_0", lambda x: None)):
        assert torch.equal(logits(lm), baseline)


def test_pitfall_always_cleanup(lm):
    detector = LayerActivationDetector("layer_0")
    try:
        hook_id = lm.layers.register_hook("layer_0", detector)
        lm.inference.execute_inference(["Hello, world!"])
    finally:
        lm.layers.unregister_hook(hook_id)
    assert lm.layers.registered() == []
