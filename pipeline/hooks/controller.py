"""Controllers: hooks that replace a module's activations.

`modify_activations(module, inputs, output)` returns the replacement or None to keep the
original. FORWARD controllers get the module's hidden-state tensor as `output` and their
replacement goes back into the module's output through PyTorch's hook return value (for
tuple or ModelOutput outputs only the hidden-state element changes). PRE_FORWARD
controllers get `output=None` and their replacement becomes the module's first input.

A replacement must keep the shape (a `HookError` names both shapes otherwise); its dtype
and device are matched to the original so a float32 edit works on a bfloat16 model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.hooks.hook import (
    Hook,
    HookError,
    HookType,
    first_input,
    hidden_state_of,
    replace_hidden_state,
    with_first_input,
)


class Controller(Hook):
    """Base class for hooks that change activations; subclasses implement `modify_activations`."""

    def modify_activations(self, module, inputs, output):
        raise NotImplementedError(f"{type(self).__name__} must implement modify_activations")

    def _checked(self, original: torch.Tensor | None, new):
        if new is None or new is original:
            return None
        if not isinstance(new, torch.Tensor):
            raise HookError(
                self.id,
                self.hook_type,
                f"modify_activations returned {type(new).__name__}, expected a tensor or None",
            )
        if original is not None:
            if new.shape != original.shape:
                raise HookError(
                    self.id,
                    self.hook_type,
                    f"modify_activations returned shape {tuple(new.shape)} but the activations have shape "
                    f"{tuple(original.shape)}; a controller must keep the shape",
                )
            new = new.to(device=original.device, dtype=original.dtype)
        return new

    def _on_forward(self, module, args, output):
        if not self.context.controllers_enabled:
            return None
        hidden = hidden_state_of(output)
        new = self._checked(hidden, self.modify_activations(module, args, hidden))
        return None if new is None else replace_hidden_state(output, new)

    def _on_pre_forward(self, module, args, kwargs):
        if not self.context.controllers_enabled:
            return None
        hidden = first_input(args, kwargs)
        inputs = args if args else (hidden,)
        new = self._checked(hidden, self.modify_activations(module, inputs, None))
        return None if new is None else with_first_input(args, kwargs, new)


class FunctionController(Controller):
    """Applies `function(tensor) -> tensor` to the output (FORWARD) or first input (PRE_FORWARD)."""

    def __init__(
        self,
        layer_signature: str | int | None,
        function: Callable[[torch.Tensor], torch.Tensor],
        hook_type: HookType | str = HookType.FORWARD,
        hook_id: str | None = None,
    ):
        super().__init__(layer_signature=layer_signature, hook_type=hook_type, hook_id=hook_id)
        if not callable(function):
            raise TypeError(f"FunctionController needs a callable, got {type(function).__name__}")
        self.function = function

    def modify_activations(self, module, inputs, output):
        target = output if self.hook_type is HookType.FORWARD else (inputs[0] if inputs else None)
        return self.function(target)
