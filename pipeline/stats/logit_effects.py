"""Which output tokens a latent's decoder direction promotes and suppresses.

For a causal LM, a latent's decoder row d (width D) added to the residual stream moves
the logits by roughly W_U g ⊙ d, W_U the unembedding [V, D] and g the final norm's
scale (folded in as TransformerLens does before sae-dashboard reads `W_dec @ W_U`). The
tokens with the largest and smallest entries are the ones the latent promotes and
suppresses. It ignores the layers after the hook and the norm's centring and scaling by
the actual activation, so it reads a direction, not an effect measured on text (the
interventions stage measures those).

Encoders have no unembedding, and a hook narrower or wider than the residual stream (an
MLP's inside) has no direct path to it: then there is no table, and the reason is kept.
Legend: F latents, D width, V vocabulary, L latents in one chunk.
"""

from __future__ import annotations

import pandas as pd
import torch

from pipeline.model import LanguageModel
from pipeline.sae import Sae

FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm")
LATENT_CHUNK = 256


def final_norm_scale(lm: LanguageModel) -> torch.Tensor | None:
    """The final norm's weight [D], when the model has one under a usual name."""
    base = lm.model.base_model
    for name in FINAL_NORM_NAMES:
        weight = getattr(getattr(base, name, None), "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 1:
            return weight.detach()
    return None


def unembedding(lm: LanguageModel, width: int) -> tuple[torch.Tensor | None, str]:
    """(W_U [V, D] with the final norm's scale folded in, or None; what was used or why not)."""
    head = lm.model.get_output_embeddings()
    if head is None:
        return None, "the model is an encoder (no unembedding)"
    W_U = head.weight.detach().float()
    if W_U.shape[1] != width:
        return None, (
            f"the hook has width {width} but the unembedding takes {W_U.shape[1]} "
            "(the hook is not on the residual stream)"
        )
    scale = final_norm_scale(lm)
    if scale is None:
        return W_U, "W_dec @ W_U (no final norm found to fold in)"
    return W_U * scale.float().unsqueeze(0), "W_dec @ (W_U * final norm scale)"


def output_token_effects(
    sae: Sae, lm: LanguageModel, top: int = 10
) -> tuple[pd.DataFrame | None, str]:
    """(one row per latent x direction x rank: token_id, token, token_text, logit; or None,
    and the method or the reason there is none)."""
    W_U, how = unembedding(lm, sae.n_inputs)
    if W_U is None:
        return None, how
    top = min(top, W_U.shape[0])
    W_dec = sae.W_dec.detach().float().cpu()
    frames = []
    with torch.no_grad():
        for lo in range(0, sae.n_latents, LATENT_CHUNK):
            logits_LV = W_dec[lo : lo + LATENT_CHUNK] @ W_U.T
            for direction, largest in (("promoted", True), ("suppressed", False)):
                values, ids = torch.topk(logits_LV, top, dim=1, largest=largest)
                latents = torch.arange(lo, lo + logits_LV.shape[0]).unsqueeze(1).expand_as(ids)
                frames.append(
                    pd.DataFrame(
                        {
                            "latent": latents.flatten().numpy(),
                            "direction": direction,
                            "rank": torch.arange(top).repeat(logits_LV.shape[0]).numpy(),
                            "token_id": ids.flatten().numpy(),
                            "logit": values.flatten().numpy(),
                        }
                    )
                )
    table = pd.concat(frames, ignore_index=True).sort_values(
        ["latent", "direction", "rank"], kind="stable", ignore_index=True
    )
    vocabulary = table.token_id.unique().tolist()
    pieces = dict(zip(vocabulary, lm.tokenizer.convert_ids_to_tokens(vocabulary), strict=True))
    texts = lm.tokenizer.batch_decode([[i] for i in vocabulary], clean_up_tokenization_spaces=False)
    text_of = dict(zip(vocabulary, texts, strict=True))
    table["token"] = table.token_id.map(pieces)
    table["token_text"] = table.token_id.map(text_of)
    return table, how
