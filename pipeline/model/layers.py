"""Layer names, their resolution, and hook registration for one model.

A layer signature is a dotted module path (as `model.named_modules()` gives it), an
integer index into `names()`, or `layer_N`, the N-th transformer block whatever the model
family. The block list is found structurally (the `ModuleList` whose length is the
config's number of layers), never by parsing names with regular expressions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pipeline.hooks.hook import BatchContext, Hook, HookType


def find_block_names(model: torch.nn.Module) -> list[str]:
    """Dotted names of the transformer blocks, in depth order ([] if none found)."""
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        is_block_list = isinstance(module, torch.nn.ModuleList) and len(module) > 0
        if is_block_list and (num_layers is None or len(module) == num_layers):
            return [f"{name}.{i}" for i in range(len(module))]
    return []


class Layers:
    """The model's layers and the hooks registered on them."""

    def __init__(self, model: torch.nn.Module, context: BatchContext):
        self._model = model
        self._context = context
        self._modules = dict(model.named_modules())
        self._names = [name for name in self._modules if name]
        self._blocks = find_block_names(model)
        self._registered: dict[str, tuple[Hook, str, torch.utils.hooks.RemovableHandle]] = {}

    # --- names ------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every module's dotted path, in `named_modules()` order (the root excluded)."""
        return list(self._names)

    def block_names(self) -> list[str]:
        """Dotted paths of the transformer blocks: `layer_N` is `block_names()[N]`."""
        return list(self._blocks)

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def resolve(self, signature: str | int) -> str:
        """The dotted module path a signature names; `""` is the model itself."""
        if isinstance(signature, bool) or not isinstance(signature, (str, int)):
            raise TypeError(f"a layer signature is a str or int, got {type(signature).__name__}")
        if isinstance(signature, int):
            if not -len(self._names) <= signature < len(self._names):
                raise ValueError(
                    f"layer index {signature} is out of range: the model has {len(self._names)} "
                    f"modules (indices 0..{len(self._names) - 1} into lm.layers.names())"
                )
            return self._names[signature]
        if signature == "" or signature in self._modules:
            return signature
        if signature.startswith("layer_") and signature[6:].isdigit():
            index = int(signature[6:])
            if index < len(self._blocks):
                return self._blocks[index]
            raise ValueError(
                f"unknown layer {signature!r}: the model has {len(self._blocks)} blocks "
                f"(layer_0 .. layer_{len(self._blocks) - 1})"
            )
        close = difflib.get_close_matches(signature, self._names, n=5, cutoff=0.5)
        hint = f"closest names: {', '.join(close)}" if close else "see lm.layers.names()"
        raise ValueError(f"unknown layer {signature!r}; {hint}")

    def get(self, signature: str | int) -> torch.nn.Module:
        return self._modules[self.resolve(signature)]

    def depth(self, signature: str | int) -> int:
        """Position of a module in `named_modules()` order (deeper layers come later)."""
        name = self.resolve(signature)
        return -1 if name == "" else self._names.index(name)

    # --- hooks --------------------------------------------------------------------------
    def register_hook(self, signature: str | int | None, hook: Hook) -> str:
        """Attach `hook` to a layer and return its id. `signature=None` uses the hook's own."""
        if not isinstance(hook, Hook):
            raise TypeError(f"register_hook needs a Hook, got {type(hook).__name__}")
        if hook.id in self._registered:
            raise ValueError(
                f"hook {hook.id} is already registered on {self._registered[hook.id][1]!r}"
            )
        signature = hook.layer_signature if signature is None else signature
        if signature is None:
            raise ValueError(f"hook {hook.id} has no layer signature; pass one to register_hook")
        name = self.resolve(signature)
        module = self._modules[name]
        if hook.hook_type is HookType.FORWARD:
            handle = module.register_forward_hook(hook._forward_hook)
        else:
            handle = module.register_forward_pre_hook(hook._pre_forward_hook, with_kwargs=True)
        hook.layer_signature = signature
        hook.module_name = name
        hook.context = self._context
        self._registered[hook.id] = (hook, name, handle)
        return hook.id

    def unregister_hook(self, hook_or_id: str | Hook) -> None:
        hook_id = hook_or_id.id if isinstance(hook_or_id, Hook) else hook_or_id
        entry = self._registered.pop(hook_id, None)
        if entry is None:
            raise ValueError(f"no hook with id {hook_id!r} is registered")
        entry[2].remove()

    def registered(self) -> list[Hook]:
        """Registered hooks in registration order (the order they run on one module)."""
        return [hook for hook, _, _ in self._registered.values()]

    @contextmanager
    def hooks(self, *hooks: Hook | tuple[str | int, Hook]) -> Iterator[list[str]]:
        """Register hooks for the body of a `with` block; removed on exit, also on errors.

        Each item is a hook (registered on its own `layer_signature`) or a
        `(signature, hook)` pair.
        """
        ids: list[str] = []
        try:
            for item in hooks:
                signature, hook = item if isinstance(item, tuple) else (None, item)
                ids.append(self.register_hook(signature, hook))
            yield ids
        finally:
            for hook_id in reversed(ids):
                self.unregister_hook(hook_id)
