"""Controllers for the patterns researchers keep rewriting (see docs/hooks.md).

Each is a small `Controller` built from functions, so they compose: a pipeline step can
be any callable, including another controller's transform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from pipeline.hooks.controller import Controller
from pipeline.hooks.hook import HookType

Transform = Callable[[torch.Tensor], torch.Tensor]


def _compose(transforms: Sequence[Transform]) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        for transform in transforms:
            x = transform(x)
        return x

    return apply


class PipelineController(Controller):
    """Applies `transformations` in order: the output of one is the input of the next."""

    def __init__(
        self, layer_signature, transformations: Iterable[Transform], hook_type=HookType.FORWARD
    ):
        super().__init__(layer_signature=layer_signature, hook_type=hook_type)
        self.transformations = list(transformations)
        self._apply = _compose(self.transformations)

    def modify_activations(self, module, inputs, output):
        return None if output is None else self._apply(output)


class ConditionalPipeline(Controller):
    """Applies `pipeline_a` when `condition_fn(output)` is true, else `pipeline_b`.

    Each pipeline is a callable or a list of callables (composed in order).
    """

    def __init__(
        self, layer_signature, condition_fn: Callable[[torch.Tensor], bool], pipeline_a, pipeline_b
    ):
        super().__init__(layer_signature=layer_signature, hook_type=HookType.FORWARD)
        self.condition_fn = condition_fn
        self.pipeline_a = pipeline_a if callable(pipeline_a) else _compose(list(pipeline_a))
        self.pipeline_b = pipeline_b if callable(pipeline_b) else _compose(list(pipeline_b))

    def modify_activations(self, module, inputs, output):
        if output is None:
            return None
        return self.pipeline_a(output) if self.condition_fn(output) else self.pipeline_b(output)


class TokenPositionController(Controller):
    """Applies `function` only at the given sequence positions (dimension 1 of [B, T, D]).

    Positions past the sequence length are ignored; negative positions count from the end.
    """

    def __init__(
        self,
        layer_signature,
        token_indices: Iterable[int],
        function: Transform | None = None,
        scale: float = 2.0,
    ):
        super().__init__(layer_signature=layer_signature, hook_type=HookType.FORWARD)
        self.token_indices = sorted(set(token_indices))
        self.function = function if function is not None else (lambda x: x * scale)

    def modify_activations(self, module, inputs, output):
        if output is None or output.dim() < 3:
            return None
        seq_len = output.shape[1]
        positions = [i % seq_len for i in self.token_indices if -seq_len <= i < seq_len]
        if not positions:
            return None
        index = torch.tensor(positions, device=output.device)
        modified = output.clone()
        modified[:, index, :] = self.function(output[:, index, :])
        return modified


class ActivationThresholdController(Controller):
    """Applies `function` only when the batch's mean |activation| exceeds `threshold`."""

    def __init__(
        self,
        layer_signature,
        threshold: float = 1.0,
        function: Transform | None = None,
        scale: float = 1.5,
    ):
        super().__init__(layer_signature=layer_signature, hook_type=HookType.FORWARD)
        self.threshold = threshold
        self.function = function if function is not None else (lambda x: x * scale)

    def modify_activations(self, module, inputs, output):
        if output is None or output.abs().mean().item() <= self.threshold:
            return None
        return self.function(output)
