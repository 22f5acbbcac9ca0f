"""Running batches through the model with the registered hooks.

Tokenization pads on the right by hand instead of asking the tokenizer to pad, so the
user's tokenizer is never mutated (GPT-2's has no pad token). Only `input_ids` and
`attention_mask` reach the model: a BERT tokenizer's `token_type_ids` would change a
GPT-2 model's activations.

`forward_ids(..., stop_after=layer)` ends the forward pass right after that layer (and
every hook on it) ran: capture never pays for layers nobody reads.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager

import torch
from transformers import BatchEncoding


class _StopForward(Exception):
    """Raised by the stop hook to end a forward pass early; never escapes `forward_ids`."""


class Inference:
    """`lm.inference`: one batch at a time through the model and its hooks."""

    def __init__(self, lm):
        self._lm = lm

    def encode(self, texts: list[str] | str, max_length: int | None = None) -> BatchEncoding:
        """Tokenize and right-pad `texts` into tensors on the model's device."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("execute_inference needs at least one text")
        tokenizer = self._lm.tokenizer
        encoded = tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_attention_mask=False,
        )
        sequences = encoded["input_ids"]
        limit = self._lm.max_positions
        longest = max(len(s) for s in sequences)
        if max_length is None and limit is not None and longest > limit:
            raise ValueError(
                f"a text has {longest} tokens but the model takes at most {limit}; "
                f"pass max_length={limit} to truncate, or split the text"
            )
        batch, width = len(sequences), max(longest, 1)
        input_ids = torch.full((batch, width), self._lm.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        special = torch.zeros((batch, width), dtype=torch.long)
        for i, (ids, flags) in enumerate(
            zip(sequences, encoded["special_tokens_mask"], strict=True)
        ):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
            special[i, : len(ids)] = torch.tensor(flags, dtype=torch.long)
        device = self._lm.device
        return BatchEncoding(
            {
                "input_ids": input_ids.to(device),
                "attention_mask": attention_mask.to(device),
                "special_tokens_mask": special.to(device),
            }
        )

    def execute_inference(
        self,
        texts: list[str] | str,
        max_length: int | None = None,
        with_controllers: bool = True,
    ):
        """Run one batch of texts; returns `(outputs, encodings)`.

        `with_controllers=False` switches controllers off for this call only (restored
        even when the call raises); detectors still run.
        """
        encodings = self.encode(texts, max_length=max_length)
        outputs = self.forward_ids(
            encodings["input_ids"],
            encodings["attention_mask"],
            special_tokens_mask=encodings["special_tokens_mask"],
            with_controllers=with_controllers,
        )
        return outputs, encodings

    def forward_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        special_tokens_mask: torch.Tensor | None = None,
        with_controllers: bool = True,
        stop_after: str | int | None = None,
    ):
        """Run token ids through the model with all registered hooks.

        With `stop_after`, the pass ends after that layer and returns None: the
        detectors have what they need and the deeper layers are skipped.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        context = self._lm.context
        context.input_ids_BT = input_ids
        context.attention_mask_BT = attention_mask
        context.special_tokens_mask_BT = special_tokens_mask
        with self._controllers(with_controllers), self._stopping_after(stop_after), torch.no_grad():
            try:
                return self._lm.model(
                    input_ids=input_ids, attention_mask=attention_mask, **self._no_cache
                )
            except _StopForward:
                return None

    @functools.cached_property
    def _no_cache(self) -> dict:
        """`use_cache=False` where the model takes it: one pass over whole windows never
        reuses keys and values, and building the cache costs memory and a copy per block."""
        parameters = inspect.signature(self._lm.model.forward).parameters
        return {"use_cache": False} if "use_cache" in parameters else {}

    @contextmanager
    def _controllers(self, enabled: bool):
        context = self._lm.context
        previous = context.controllers_enabled
        context.controllers_enabled = enabled
        try:
            yield
        finally:
            context.controllers_enabled = previous

    @contextmanager
    def _stopping_after(self, signature: str | int | None):
        if signature is None:
            yield
            return

        def stop(module, args, output):
            raise _StopForward

        # Registered after every user hook on that module, so those still run first.
        handle = self._lm.layers.get(signature).register_forward_hook(stop)
        try:
            yield
        finally:
            handle.remove()
