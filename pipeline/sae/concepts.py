"""`sae.concepts`: which latents the controller edits, and which texts each latent likes.

An edit is per latent and the last one given for a latent wins:

- `manipulate_concept(i, scale)` multiplies latent i's code where it is active. For a
  TopK SAE that is where i made the top k; where it did not, its code is 0 and stays 0
  (the pre-activation is not consulted, and the other latents' selection is never
  recomputed).
- `set_concept(i, value)` sets latent i's code to `value` at every token, active or not,
  which is how to switch a latent on (steering) or off (`value=0`, ablation).

Only the edited latents' codes change; the hook turns the change into
`(z'_S - z_S) @ W_dec[S]` and adds it to the activations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pipeline.sae.tracking import TextTracker, TopText


class Concepts:
    """Latent edits for the controller and text tracking for the detector of one SAE."""

    def __init__(self, sae):
        self._sae = sae
        self._edits: dict[int, tuple[str, float]] = {}
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self.tracker: TextTracker | None = None

    # --- edits -------------------------------------------------------------------------
    def _check(self, neuron_idx: int, number: float, name: str) -> tuple[int, float]:
        n_latents = self._sae.n_latents
        if (
            isinstance(neuron_idx, bool)
            or not isinstance(neuron_idx, int)
            or not 0 <= neuron_idx < n_latents
        ):
            raise ValueError(f"neuron_idx must be an int in 0..{n_latents - 1}, got {neuron_idx!r}")
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            raise ValueError(f"{name} must be a finite number, got {number!r}")
        return neuron_idx, float(number)

    def _put(self, kind: str, items: Mapping[int, float], name: str) -> None:
        checked = [self._check(i, v, name) for i, v in items.items()]
        for i, v in checked:
            self._edits[i] = (kind, v)
        self._cache.clear()

    def manipulate_concept(self, neuron_idx: int, scale: float) -> None:
        """Multiply latent `neuron_idx`'s code by `scale` wherever it is active."""
        self._put("scale", {neuron_idx: scale}, "scale")

    def manipulate_concepts(self, scales: Mapping[int, float]) -> None:
        """`manipulate_concept` for several latents: `{neuron_idx: scale, ...}`."""
        self._put("scale", scales, "scale")

    def set_concept(self, neuron_idx: int, value: float) -> None:
        """Set latent `neuron_idx`'s code to `value` at every token."""
        self._put("set", {neuron_idx: value}, "value")

    def set_concepts(self, values: Mapping[int, float]) -> None:
        """`set_concept` for several latents: `{neuron_idx: value, ...}`."""
        self._put("set", values, "value")

    def reset(self) -> None:
        """Drop every edit: the SAE goes back to leaving the model's output untouched."""
        self._edits.clear()
        self._cache.clear()

    @property
    def active(self) -> bool:
        return bool(self._edits)

    @property
    def edits(self) -> dict[int, tuple[str, float]]:
        """Current edits: `{neuron_idx: ("scale" | "set", number)}`."""
        return dict(self._edits)

    def edit_tensors(self, device, dtype) -> tuple[torch.Tensor, ...] | None:
        """(latents_S, scale_S, is_set_S, value_S) on `device`, or None without edits."""
        if not self._edits:
            return None
        key = (str(device), dtype)
        if key not in self._cache:
            latents = sorted(self._edits)
            kinds = [self._edits[i][0] for i in latents]
            numbers = [self._edits[i][1] for i in latents]
            self._cache[key] = (
                torch.tensor(latents, dtype=torch.long, device=device),
                torch.tensor(
                    [n if k == "scale" else 1.0 for k, n in zip(kinds, numbers, strict=True)],
                    dtype=dtype,
                    device=device,
                ),
                torch.tensor([k == "set" for k in kinds], dtype=torch.bool, device=device),
                torch.tensor(
                    [n if k == "set" else 0.0 for k, n in zip(kinds, numbers, strict=True)],
                    dtype=dtype,
                    device=device,
                ),
            )
        return self._cache[key]

    # --- text tracking -----------------------------------------------------------------------
    def enable_text_tracking(self, top_k: int = 10, tokenizer=None, dedupe: bool = True) -> None:
        """Start keeping each latent's `top_k` activations with their text, token and position.

        The tokenizer defaults to the one `lm.attach_sae` gave the SAE. Enabling again
        starts over. `dedupe`: the same token of the same text (texts run twice, passages
        repeated) is listed once.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.tracker = TextTracker(self._sae.n_latents, top_k, tokenizer, dedupe)

    def disable_text_tracking(self) -> None:
        """Stop tracking and forget what was tracked."""
        self.tracker = None

    @property
    def text_tracking_enabled(self) -> bool:
        return self.tracker is not None

    def _require_tracker(self) -> TextTracker:
        if self.tracker is None:
            raise ValueError(
                "text tracking is off; call sae.concepts.enable_text_tracking(top_k) first"
            )
        if self.tracker.tokenizer is None:
            self.tracker.tokenizer = self._sae.tokenizer
        return self.tracker

    def get_top_texts(self, neuron_idx: int) -> list[TopText]:
        """Latent `neuron_idx`'s top activations (`.score`, `.text`, `.token`, `.position`), best first."""
        self._check(neuron_idx, 0.0, "")
        return self._require_tracker().top_texts(neuron_idx)

    def top_texts_frame(self):
        """Every latent's top texts as a pandas DataFrame, one row per (latent, rank)."""
        import pandas as pd

        tracker = self._require_tracker()
        columns = [
            "latent", "rank", "score", "text", "token", "position", "text_row", "token_id",
            "marked",
        ]  # fmt: skip
        rows = []
        for latent, entries in enumerate(tracker.all_top_texts()):
            for rank, entry in enumerate(entries):
                rows.append(
                    (
                        latent,
                        rank,
                        entry.score,
                        entry.text,
                        entry.token,
                        entry.position,
                        entry.text_row,
                        entry.token_id,
                        entry.marked,
                    )
                )
        return pd.DataFrame(rows, columns=columns)

    def _observe(self, codes, context, shape: tuple[int, ...]) -> None:
        """Called by the hook with each batch's codes (padding already dropped)."""
        if self.tracker is None:
            return
        input_ids_BT = context.input_ids_BT
        if input_ids_BT is None or len(shape) != 3 or tuple(input_ids_BT.shape) != shape[:2]:
            raise ValueError(
                f"text tracking needs a layer output [batch, tokens, width] that matches the "
                f"batch's input ids; got output shape {shape} and input ids "
                f"{None if input_ids_BT is None else tuple(input_ids_BT.shape)}"
            )
        self.tracker.update(codes, input_ids_BT, context.attention_mask_BT)
