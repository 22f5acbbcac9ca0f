"""The text around each example token, with the latent's activation on every token of it.

A dashboard shades each context token by how strongly the latent fires there, so an
example needs more than its own activation: the rows of its context window are read
from the store again and encoded by the SAE, and the latent's value is picked from each
row's sparse code. The work is bounded by the examples (latents x examples x context),
never by the store: only the context rows are read, in sorted order, once each.

Legend: E examples, C = 2 x width + 1 context slots, U distinct context rows, K codes per
row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.model.render import TokenRenderer
from pipeline.sae import Sae
from pipeline.store.reader import ActivationStore

ENCODE_ROWS = 4096


def add_contexts(
    examples: pd.DataFrame,
    store: ActivationStore,
    hook: str,
    sae: Sae,
    width: int,
    renderer: TokenRenderer | None,
) -> pd.DataFrame:
    """`examples` (latent, row, ...) with its token, its context and the context's activations.

    Adds doc_id, window, position, token (raw piece), token_text, context (decoded, the
    token in [[ ]]), context_tokens (each token's text), context_activations (the
    latent's value on each) and context_index (the example's place in those lists), and
    sets `activation` to the latent's value at the example's own row.
    """
    if examples.empty:
        return examples.assign(
            doc_id=[], window=[], position=[], token=[], token_text=[], context=[],
            context_tokens=[], context_activations=[], context_index=[],
        )  # fmt: skip
    rows_E = examples.row.to_numpy(np.int64)
    offsets_C = np.arange(-width, width + 1)
    candidates_EC = rows_E[:, None] + offsets_C[None, :]
    in_store_EC = (candidates_EC >= 0) & (candidates_EC < store.num_rows)
    # One more row before each context, so every context token's text knows its predecessor.
    wanted = np.unique(np.concatenate([candidates_EC[in_store_EC], rows_E - width - 1]))
    wanted = wanted[(wanted >= 0) & (wanted < store.num_rows)]
    tokens = store.tokens(rows=wanted).to_pandas().set_index("row")
    window_U = tokens.window.reindex(candidates_EC.ravel()).to_numpy().reshape(candidates_EC.shape)
    own_window_E = tokens.window.loc[rows_E].to_numpy()
    in_context_EC = in_store_EC & (window_U == own_window_E[:, None])
    context_rows = np.unique(candidates_EC[in_context_EC])

    texts = _token_texts(tokens, context_rows, renderer)
    values = _latent_values(store, hook, sae, context_rows, candidates_EC, in_context_EC, examples)

    ids_U = tokens.token_id.loc[context_rows].to_numpy()
    raw_U = tokens.token.loc[context_rows].to_numpy()
    lists_tokens, lists_values, indices, marked, own_texts = [], [], [], [], []
    for e, row in enumerate(rows_E):
        rows_here = candidates_EC[e][in_context_EC[e]]
        where = np.searchsorted(context_rows, rows_here)
        index = int(np.searchsorted(rows_here, row))
        pieces = [texts[i] for i in where]
        own = pieces[index] or str(raw_U[where[index]])  # a special token shows its name
        pieces[index] = own
        lists_tokens.append(pieces)
        lists_values.append(values[e][in_context_EC[e]].astype(np.float32).tolist())
        indices.append(index)
        if renderer is not None:
            context, own = renderer.context(ids_U[where].tolist(), index)
        else:
            context = "".join(pieces[:index]) + f"[[{own}]]" + "".join(pieces[index + 1 :])
        marked.append(context)
        own_texts.append(own)
    own_tokens = tokens.loc[rows_E]
    return examples.assign(
        activation=[v[i] for v, i in zip(lists_values, indices, strict=True)],
        doc_id=own_tokens.doc_id.to_numpy(),
        window=own_tokens.window.to_numpy(),
        position=own_tokens.position.to_numpy(),
        token=own_tokens.token.to_numpy(),
        token_text=own_texts,
        context=marked,
        context_tokens=lists_tokens,
        context_activations=lists_values,
        context_index=np.asarray(indices, dtype=np.int32),
    )


def _token_texts(
    tokens: pd.DataFrame, rows: np.ndarray, renderer: TokenRenderer | None
) -> list[str]:
    """Each row's own text given the token before it in its window (raw tokens without a
    tokenizer, spaced)."""
    if renderer is None:
        return [" " + str(t) for t in tokens.token.loc[rows]]
    previous = tokens.reindex(rows - 1)
    same_window = previous.window.to_numpy() == tokens.window.loc[rows].to_numpy()
    previous_ids = np.where(same_window, previous.token_id.fillna(-1).to_numpy(), -1)
    return renderer.pieces(
        previous_ids.astype(np.int64).tolist(), tokens.token_id.loc[rows].tolist()
    )


def _latent_values(
    store: ActivationStore,
    hook: str,
    sae: Sae,
    context_rows: np.ndarray,
    candidates_EC: np.ndarray,
    in_context_EC: np.ndarray,
    examples: pd.DataFrame,
) -> np.ndarray:
    """[E, C] the example's latent at each context row (0 outside the context)."""
    values_EC = np.zeros(candidates_EC.shape, dtype=np.float64)
    example_E, slot_E = np.nonzero(in_context_EC)  # every (example, slot) pair to look up
    pair_rows = candidates_EC[example_E, slot_E]
    pair_latents = examples.latent.to_numpy(np.int64)[example_E]
    order = np.argsort(pair_rows, kind="stable")
    sorted_rows = pair_rows[order]
    with torch.no_grad():
        for lo in range(0, len(context_rows), ENCODE_ROWS):
            chunk = context_rows[lo : lo + ENCODE_ROWS]
            x_ND = torch.from_numpy(store.read(hook, chunk)).to(sae.device, sae.dtype)
            values_NK, indices_NK = sae.encode_sparse(x_ND)
            a, b = np.searchsorted(sorted_rows, [chunk[0], chunk[-1] + 1])
            pairs = order[a:b]
            local = torch.from_numpy(np.searchsorted(chunk, pair_rows[pairs]))
            latents = torch.from_numpy(pair_latents[pairs]).to(indices_NK.device)
            match = indices_NK[local] == latents.unsqueeze(1)
            found = (values_NK[local] * match).sum(1).clamp(min=0)
            values_EC[example_E[pairs], slot_E[pairs]] = found.double().cpu().numpy()
    return values_EC
