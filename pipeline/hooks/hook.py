"""The base of every hook: identity, type, enable/disable, and the PyTorch adapter.

A `Hook` is a plain object that knows *what* to do with a module's activations; `Layers`
decides *where* it runs. The adapter methods (`_forward_hook`, `_pre_forward_hook`) are the
only code PyTorch calls: they unwrap the module output into the hidden-state tensor (blocks
in transformers 5 return plain tensors, older ones tuples, some modules `ModelOutput`s),
call the user-facing method, put a replacement back in the same structure, and turn any
exception into a `HookError` that names the hook. Subclasses never see tuples.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from typing import Any

import torch

_ids = itertools.count()


class HookType(enum.StrEnum):
    """When a hook runs: after the module (`FORWARD`) or before it (`PRE_FORWARD`)."""

    FORWARD = "forward"
    PRE_FORWARD = "pre_forward"


class HookError(RuntimeError):
    """An exception raised inside a hook, with the hook's identity attached.

    The original exception is chained (`__cause__`) and kept in `original`.
    """

    def __init__(self, hook_id: str, hook_type: HookType, message: str, original=None):
        super().__init__(f"hook {hook_id} ({hook_type.value}): {message}")
        self.hook_id = hook_id
        self.hook_type = hook_type
        self.original = original


@dataclass
class BatchContext:
    """What the current forward pass is about, shared by every hook of a model.

    `attention_mask_BT` is 1 for real tokens and 0 for padding; detectors use it to drop
    padding rows. `special_tokens_mask_BT` flags tokens the tokenizer added.
    `controllers_enabled` is False during `execute_inference(..., with_controllers=False)`.
    """

    input_ids_BT: torch.Tensor | None = None
    attention_mask_BT: torch.Tensor | None = None
    special_tokens_mask_BT: torch.Tensor | None = None
    controllers_enabled: bool = True


def hidden_state_of(value: Any) -> torch.Tensor | None:
    """The hidden-state tensor inside a module's output (or input), or None.

    Plain tensors are returned as they are; for tuples and lists the first element;
    for `ModelOutput` (a dict subclass) its first value (`last_hidden_state` etc.).
    """
    if value is None or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return hidden_state_of(value[0]) if value else None
    if isinstance(value, dict):
        for item in value.values():
            return hidden_state_of(item)
    return None


def replace_hidden_state(original: Any, new: torch.Tensor) -> Any:
    """`original` with its hidden-state element swapped for `new`, the rest kept."""
    if isinstance(original, torch.Tensor) or original is None:
        return new
    if isinstance(original, tuple):
        return (replace_hidden_state(original[0], new), *original[1:])
    if isinstance(original, list):
        return [replace_hidden_state(original[0], new), *original[1:]]
    if isinstance(original, dict):
        first_key = next(iter(original.keys()))
        replaced = original.copy()
        replaced[first_key] = replace_hidden_state(original[first_key], new)
        return replaced
    raise TypeError(f"cannot replace the hidden state inside a {type(original).__name__}")


class Hook:
    """A unit of work attached to one module of a model.

    `layer_signature` may be left None and given at registration
    (`lm.layers.register_hook("layer_0", hook)` sets it). `id` is unique per process.
    """

    def __init__(
        self,
        layer_signature: str | int | None = None,
        hook_type: HookType | str = HookType.FORWARD,
        hook_id: str | None = None,
    ):
        self.layer_signature = layer_signature
        self.hook_type = HookType(hook_type)
        self.id = hook_id or f"{type(self).__name__}-{next(_ids)}"
        self.enabled = True
        self.context = BatchContext()

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    # --- called by PyTorch through Layers -------------------------------------------
    def _forward_hook(self, module, args, output):
        return self._guarded(self._on_forward, module, args, output)

    def _pre_forward_hook(self, module, args, kwargs):
        return self._guarded(self._on_pre_forward, module, args, kwargs)

    def _guarded(self, handler, *call):
        """Run `handler` unless disabled; any exception becomes a HookError naming this hook."""
        if not self.enabled:
            return None
        try:
            return handler(*call)
        except HookError:
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            raise HookError(self.id, self.hook_type, message, error) from error

    def _on_forward(self, module, args, output):
        raise NotImplementedError

    def _on_pre_forward(self, module, args, kwargs):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, layer={self.layer_signature!r}, type={self.hook_type.value})"


def first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first positional input of a module call (or `hidden_states=` when passed by name)."""
    if args:
        return hidden_state_of(args[0])
    return hidden_state_of(kwargs.get("hidden_states"))


def with_first_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    """(args, kwargs) with the first positional input replaced by `new`."""
    if args:
        return (replace_hidden_state(args[0], new), *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": new}
    raise TypeError("the module was called without a positional input to replace")
