"""The SAE's hook plumbing: how one object is both a `Detector` and a `Controller`.

The forward hook encodes the layer's output once; the codes are recorded (detector, as
`SparseCodes` of the batch's real tokens) and, only when a concept is edited or `splice`
is on, used to build the replacement (controller). With nothing edited the hook returns
None, so the model's output is bit-identical to a run without the SAE. Kept apart from
the module (`pipeline/sae/base.py`: weights, encode, decode) so the math reads without
the hooks, and the hooks without the math: `SaeHooks` needs only `_rows`, `encode_sparse`,
`decode_sparse`, `W_dec`, `n_inputs`, `n_latents`, `dtype`, `device` and `concepts`.
"""

from __future__ import annotations

import dataclasses

import torch

from pipeline.hooks.controller import Controller
from pipeline.hooks.detector import Detector
from pipeline.hooks.hook import (
    HookType,
    first_input,
    hidden_state_of,
    replace_hidden_state,
    with_first_input,
)
from pipeline.sae.codes import SparseCodes


class SaeHooks(Detector, Controller):
    """The Detector and Controller roles of an SAE (mixed into `Sae`)."""

    def check_layer(self, lm, layer_signature: str | int) -> None:
        """Called by `lm.attach_sae`: the width the SAE reads must be `n_inputs` (the
        layer's output, or its first input for a PRE_FORWARD SAE)."""
        of_input = self.hook_type is HookType.PRE_FORWARD
        width = layer_width(lm, layer_signature, of_input=of_input)
        if width != self.n_inputs:
            raise ValueError(
                f"{type(self).__name__} has n_inputs={self.n_inputs} but layer {layer_signature!r} "
                f"({lm.layers.resolve(layer_signature)!r}) {'takes' if of_input else 'outputs'} "
                f"width {width}; attach it to a layer of that width or use an SAE trained on this layer"
            )
        self.tokenizer = lm.tokenizer

    def get_captured(self) -> SparseCodes | None:
        """Codes of the last batch's real tokens (of the layer's original output), on CPU.

        The hook keeps the batch's codes where they were computed; the copy to the CPU
        (and the dropping of padding rows) happens here, once per batch, when someone
        asks: a forward pass whose codes nobody reads costs no device-to-host copy and,
        on a GPU, no synchronisation.
        """
        if self._latest is None and self._unread is not None:
            self._latest = sparse_codes(*self._unread, self.n_latents)
            self._unread = None
        return self._latest

    def clear_captured(self) -> None:
        self._latest, self._unread = None, None

    def _encode_hidden(
        self, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_ND, _ = self._rows(hidden)
        x_ND = x_ND.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            values_NK, indices_NK = self.encode_sparse(x_ND)
        return x_ND, values_NK, indices_NK

    def _record(self, shape: torch.Size, values_NK: torch.Tensor, indices_NK: torch.Tensor) -> None:
        """Keep the batch's codes (on their device, with the batch's real-token mask) for
        `get_captured`; text tracking reads them at once, as it ranks every batch."""
        self._latest = None
        self._unread = (tuple(shape), values_NK.detach(), indices_NK, self.real_token_mask(shape))
        if self.concepts.text_tracking_enabled:
            self.concepts._observe(self.get_captured(), self.context, tuple(shape))

    def _control(self, x_ND, values_NK, indices_NK) -> torch.Tensor | None:
        """The replacement rows [N, D], or None to keep the layer's output as it is."""
        edits = self.concepts.edit_tensors(self.device, self.dtype)
        if edits is None and not self.splice:
            return None
        with torch.no_grad():
            base_ND = self.decode_sparse(values_NK, indices_NK) if self.splice else x_ND
            if edits is None:
                return base_ND
            latents_S, scale_S, is_set_S, value_S = edits
            old_NS = (values_NK.unsqueeze(2) * (indices_NK.unsqueeze(2) == latents_S)).sum(1)
            new_NS = torch.where(is_set_S, value_S, old_NS * scale_S)
            return base_ND + (new_NS - old_NS) @ self.W_dec[latents_S]

    def _read_and_edit(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Record the codes of `hidden` [B, T, D]; return its replacement, or None to keep it."""
        x_ND, values_NK, indices_NK = self._encode_hidden(hidden)
        self._record(hidden.shape, values_NK, indices_NK)
        if not self.context.controllers_enabled:
            return None
        new_ND = self._control(x_ND, values_NK, indices_NK)
        return None if new_ND is None else self._checked(hidden, new_ND.reshape(hidden.shape))

    def _on_forward(self, module, args, output):
        hidden = hidden_state_of(output)
        new = None if hidden is None else self._read_and_edit(hidden)
        return None if new is None else replace_hidden_state(output, new)

    def _on_pre_forward(self, module, args, kwargs):
        """PRE_FORWARD: read (and edit) the layer's first input, e.g. a block's residual
        stream on the way in (SAELens `hook_resid_pre` SAEs)."""
        hidden = first_input(args, kwargs)
        new = None if hidden is None else self._read_and_edit(hidden)
        return None if new is None else with_first_input(args, kwargs, new)

    def process_activations(self, module, input, output) -> None:
        """Detector role on its own: keep the codes of `output` [B, T, D]."""
        if output is not None:
            _, values_NK, indices_NK = self._encode_hidden(output)
            self._record(output.shape, values_NK, indices_NK)

    def modify_activations(self, module, inputs, output):
        """Controller role on its own: the edited `output`, or None when nothing is edited."""
        if output is None:
            return None
        new_ND = self._control(*self._encode_hidden(output))
        return None if new_ND is None else new_ND.reshape(output.shape)


def sparse_codes(
    shape: tuple[int, ...],
    values_NK: torch.Tensor,
    indices_NK: torch.Tensor,
    mask_BT: torch.Tensor | None,
    n_latents: int,
) -> SparseCodes:
    """One batch's codes as `SparseCodes` on the CPU, padding rows dropped.

    Rows of a [B, T, D] output are numbered batch-major; other shapes are one row each.
    """
    num_rows = values_NK.shape[0]
    if len(shape) == 3:
        batch, seq = shape[0], shape[1]
        batch_N = torch.arange(batch).repeat_interleave(seq)
        position_N = torch.arange(seq).repeat(batch)
    else:
        batch_N, position_N = torch.arange(num_rows), torch.zeros(num_rows, dtype=torch.long)
    values_NK = values_NK.to("cpu", copy=True)
    indices_NK = indices_NK.to("cpu", copy=True)
    if mask_BT is not None:
        keep_N = mask_BT.reshape(-1).cpu()
        values_NK, indices_NK = values_NK[keep_N], indices_NK[keep_N]
        batch_N, position_N = batch_N[keep_N], position_N[keep_N]
    return SparseCodes(values_NK, indices_NK, batch_N, position_N, n_latents)


def layer_output_width(lm, layer_signature: str | int) -> int:
    """Last-dimension width of a layer's output, from a one-token forward pass."""
    return layer_width(lm, layer_signature, of_input=False)


def layer_width(lm, layer_signature: str | int, of_input: bool) -> int:
    """Last-dimension width of a layer's output (or first input), from a one-token pass.

    Every registered hook is switched off for the pass and the batch context restored
    afterwards, so no detector records the probe and no controller edits it.
    """
    module = lm.layers.get(layer_signature)
    seen: dict[str, tuple[int, ...]] = {}

    def grab(mod, args, kwargs, output):
        hidden = first_input(args, kwargs) if of_input else hidden_state_of(output)
        if hidden is not None:
            seen["shape"] = tuple(hidden.shape)

    hooks = lm.layers.registered()
    was_enabled = [hook.enabled for hook in hooks]
    saved_context = dataclasses.replace(lm.context)
    handle = module.register_forward_hook(grab, with_kwargs=True)
    try:
        for hook in hooks:
            hook.disable()
        input_ids = torch.full((1, 1), lm.pad_token_id, dtype=torch.long, device=lm.device)
        lm.inference.forward_ids(input_ids, stop_after=layer_signature)
    finally:
        handle.remove()
        for hook, enabled in zip(hooks, was_enabled, strict=True):
            hook.enabled = enabled
        for field in dataclasses.fields(saved_context):
            setattr(lm.context, field.name, getattr(saved_context, field.name))
    if "shape" not in seen:
        what = "input" if of_input else "output"
        raise ValueError(f"layer {layer_signature!r} has no tensor {what}; an SAE can not read it")
    return seen["shape"][-1]
