"""Per-token effects of an intervention: pure tensor functions, one job each.

All take a baseline and an intervened tensor of the same batch [B, T, ...] and return
[B, T] float32 (or bool) values; padding is the caller's to drop. Logit-based effects
are computed in float32 whatever the model's dtype, so bf16 runs give usable KLs.

Legend: B windows, T positions, V vocabulary, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NextTokenBaseline:
    """What every stage compares against, computed once per batch (vocabulary-wide work
    is the expensive part of a causal LM's effects: do it once, not once per stage)."""

    logp_BTV: torch.Tensor
    probs_BTV: torch.Tensor
    top1_BT: torch.Tensor
    loss_BT: torch.Tensor


class VocabBuffers:
    """Float32 [B, T, V] buffers reused from batch to batch, one per name.

    A causal LM's effects need three vocabulary-wide tensors per batch (the baseline's
    log-probs and probabilities, a stage's log-probs): 123 MB each for 8 x 128 tokens of a
    30k vocabulary. Allocated afresh, every one is a new mapping whose pages the kernel
    faults in and zeroes (about a third of the effects' time on a CPU); kept, they are
    written in place. The buffers grow to the largest batch and are views of one flat
    block each, so a smaller last batch gets contiguous tensors too.
    """

    def __init__(self):
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or flat.device != device:
            flat = torch.empty(numel, dtype=torch.float32, device=device)
            self._flat[name] = flat
        return flat[:numel].view(shape)


def log_probs(logits_BTV: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Log-softmax over the last dimension in float32; into `out` (same shape) if given."""
    if out is None:
        return torch.log_softmax(logits_BTV.float(), dim=-1)
    return torch.log_softmax(logits_BTV, dim=-1, dtype=torch.float32, out=out)


def next_token_baseline(
    logits_BTV: torch.Tensor,
    ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    buffers: VocabBuffers | None = None,
) -> NextTokenBaseline:
    """The baseline's log-probs, probabilities, top-1 and loss (in `buffers` if given:
    valid until the next baseline is computed into them)."""
    if buffers is None:
        logp_BTV = log_probs(logits_BTV)
        probs_BTV = logp_BTV.exp()
    else:
        shape, device = tuple(logits_BTV.shape), logits_BTV.device
        logp_BTV = log_probs(logits_BTV, out=buffers.get("base_logp", shape, device))
        probs_BTV = torch.exp(logp_BTV, out=buffers.get("base_probs", shape, device))
    return NextTokenBaseline(
        logp_BTV=logp_BTV,
        probs_BTV=probs_BTV,
        top1_BT=logp_BTV.argmax(-1),
        loss_BT=next_token_loss(logp_BTV, ids_BT, mask_BT),
    )


def next_token_effects(
    base: NextTokenBaseline,
    logits_BTV: torch.Tensor,
    ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    buffers: VocabBuffers | None = None,
) -> dict[str, torch.Tensor]:
    """kl, top1_agree, loss_base and loss of one stage against the baseline.

    KL comes from elementwise log-prob differences (accurate for the tiny KLs of small
    interventions, where a difference of two entropies would not be), computed in the
    stage's own log-prob buffer once top-1 and loss have read it: no extra [B, T, V].
    Pass the same `buffers` as the baseline's, if any, so the two are computed alike.
    """
    out = None
    if buffers is not None:
        out = buffers.get("stage_logp", tuple(logits_BTV.shape), logits_BTV.device)
    logp_BTV = log_probs(logits_BTV, out=out)
    top1_agree_BT = logp_BTV.argmax(-1) == base.top1_BT
    loss_BT = next_token_loss(logp_BTV, ids_BT, mask_BT)
    difference_BTV = logp_BTV.sub_(base.logp_BTV)  # new - base, in place
    kl_BT = torch.linalg.vecdot(base.probs_BTV, difference_BTV).neg_().clamp_min_(0.0)
    return {"kl": kl_BT, "top1_agree": top1_agree_BT, "loss_base": base.loss_BT, "loss": loss_BT}


def next_token_loss(
    logp_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the actual next token at each position; NaN where there is none.

    The last real position of a window (and padding) has no next token in the window.
    """
    loss_BT = torch.full(ids_BT.shape, float("nan"), device=logp_BTV.device)
    if ids_BT.shape[1] < 2:
        return loss_BT
    target_BT = ids_BT[:, 1:].unsqueeze(-1)
    nll_BT = -logp_BTV[:, :-1].gather(-1, target_BT).squeeze(-1)
    has_next_BT = mask_BT[:, 1:].bool()
    loss_BT[:, :-1] = torch.where(has_next_BT, nll_BT, torch.nan)
    return loss_BT


def relative_change(base_BTD: torch.Tensor, new_BTD: torch.Tensor) -> torch.Tensor:
    """||new - base|| / ||base|| per token (0 where both are zero)."""
    base, new = base_BTD.float(), new_BTD.float()
    norm_BT = base.norm(dim=-1)
    change_BT = (new - base).norm(dim=-1)
    return torch.where(norm_BT > 0, change_BT / norm_BT.clamp_min(1e-30), change_BT)


def cosine(base_BTD: torch.Tensor, new_BTD: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per token of two hidden states."""
    return torch.nn.functional.cosine_similarity(base_BTD.float(), new_BTD.float(), dim=-1)
