"""Detectors: hooks that observe activations and never change them.

A detector's `process_activations(module, input, output)` receives the module's positional
inputs and its hidden-state tensor (None for PRE_FORWARD hooks, which run before there is
an output). Whatever it returns is ignored: a detector can not alter the forward pass.

Detectors copy what they keep off the device (`.to("cpu", copy=True)`): a reference to the
live tensor would pin device memory and would see later in-place edits by other hooks.
"""

from __future__ import annotations

import torch

from pipeline.hooks.hook import Hook, HookType, first_input, hidden_state_of


class Detector(Hook):
    """Base class for hooks that record activations.

    Subclasses implement `process_activations`; captured data conventionally lives in
    `self.tensor_metadata` (a plain dict), which `get_captured()`/`clear_captured()` read
    and clear under the key `"activations"`.
    """

    def __init__(
        self,
        layer_signature: str | int | None = None,
        hook_type: HookType | str = HookType.FORWARD,
        hook_id: str | None = None,
    ):
        super().__init__(layer_signature=layer_signature, hook_type=hook_type, hook_id=hook_id)
        self.tensor_metadata: dict = {}

    def process_activations(self, module, input, output) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement process_activations")

    def get_captured(self):
        return self.tensor_metadata.get("activations")

    def clear_captured(self) -> None:
        self.tensor_metadata.pop("activations", None)

    def real_token_mask(self, shape: torch.Size) -> torch.Tensor | None:
        """The batch's attention mask as bool [B, T] if it fits `shape`, else None."""
        mask = self.context.attention_mask_BT
        if mask is None or len(shape) < 2 or tuple(mask.shape) != tuple(shape[:2]):
            return None
        return mask.bool()

    def _on_forward(self, module, args, output):
        self.process_activations(module, args, hidden_state_of(output))
        return None

    def _on_pre_forward(self, module, args, kwargs):
        inputs = args if args else (first_input(args, kwargs),)
        self.process_activations(module, inputs, None)
        return None


class LayerActivationDetector(Detector):
    """Keeps a detached CPU copy of the latest batch's activations at one layer.

    `dtype` casts the copy (e.g. float32 from a bfloat16 model). With
    `exclude_padding=True` the capture is `[num_real_tokens, d]` (batch-major order)
    instead of `[batch, seq, d]`.
    """

    def __init__(
        self,
        layer_signature: str | int | None = None,
        dtype: torch.dtype | None = None,
        exclude_padding: bool = False,
        hook_type: HookType | str = HookType.FORWARD,
        hook_id: str | None = None,
    ):
        super().__init__(layer_signature=layer_signature, hook_type=hook_type, hook_id=hook_id)
        self.dtype = dtype
        self.exclude_padding = exclude_padding

    def process_activations(self, module, input, output) -> None:
        tensor = output if output is not None else (input[0] if input else None)
        if tensor is None:
            return
        acts = tensor.detach().to("cpu", dtype=self.dtype or tensor.dtype, copy=True)
        if self.exclude_padding:
            mask_BT = self.real_token_mask(acts.shape)
            if mask_BT is not None:
                acts = acts[mask_BT.cpu()]
        self.tensor_metadata["activations"] = acts


class ModelInputDetector(Detector):
    """Records the batch's input ids, attention mask and special-token mask.

    Register it on the model root (`""`); it reads the batch the inference call prepared.
    """

    def __init__(self, layer_signature: str | int | None = "", hook_id: str | None = None):
        super().__init__(
            layer_signature=layer_signature, hook_type=HookType.PRE_FORWARD, hook_id=hook_id
        )

    def process_activations(self, module, input, output) -> None:
        for key, value in (
            ("input_ids", self.context.input_ids_BT),
            ("attention_mask", self.context.attention_mask_BT),
            ("special_tokens_mask", self.context.special_tokens_mask_BT),
        ):
            if value is not None:
                self.tensor_metadata[key] = value.detach().to("cpu", copy=True)

    def get_captured(self):
        return self.tensor_metadata.get("input_ids")

    def clear_captured(self) -> None:
        self.tensor_metadata.clear()


class ModelOutputDetector(Detector):
    """Records the model's logits (causal LMs) or last hidden state (encoders).

    Register it on the model root (`""`).
    """

    def __init__(
        self,
        layer_signature: str | int | None = "",
        dtype: torch.dtype | None = None,
        hook_id: str | None = None,
    ):
        super().__init__(
            layer_signature=layer_signature, hook_type=HookType.FORWARD, hook_id=hook_id
        )
        self.dtype = dtype

    def _on_forward(self, module, args, output):
        for key in ("logits", "last_hidden_state"):
            value = getattr(output, key, None)
            if value is None and isinstance(output, dict):
                value = output.get(key)
            if isinstance(value, torch.Tensor):
                self.tensor_metadata["key"] = key
                self.tensor_metadata["activations"] = value.detach().to(
                    "cpu", dtype=self.dtype or value.dtype, copy=True
                )
                return None
        self.process_activations(module, args, hidden_state_of(output))
        return None

    def process_activations(self, module, input, output) -> None:
        if output is not None:
            self.tensor_metadata["activations"] = output.detach().to("cpu", copy=True)
