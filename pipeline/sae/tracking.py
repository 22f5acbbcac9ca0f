"""Top activating texts per latent, bounded however many batches stream past.

The ranking itself is `TopKExamples` (pipeline.accumulators): per latent the
`top_k` largest codes with a global token id, ties broken by the earlier token. It is fed
straight from the sparse codes (only positive entries, one candidate each), never a
dense [N, F] matrix and never a Python object per token.

What a token id stands for (text row, position, token) is kept only for ids that are
still in some latent's top list: after each batch the ids that fell out are pruned, so
metadata is bounded by `n_latents * top_k`. A text is kept once per batch row as its
token ids, shared by every entry that points into it, and decoded (then cached) only
when someone reads it.

Deduplication (on by default): running the same texts twice, or a corpus that repeats a
passage, would list the same token of the same text again. A latent's entries with the
same text and position as a stronger one are dropped when read; to still give `top_k`
entries the ranking keeps twice as many candidates. Each entry also carries `marked`, the
text with the token in [[ ]] (`pipeline.model.render`, as in the stage-2 tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.accumulators import TopKExamples
from pipeline.model.render import TokenRenderer


@dataclass(frozen=True)
class TopText:
    """One top activation of a latent: its code value and where it happened."""

    score: float
    text: str
    token: str
    position: int
    text_row: int  # index of the text among all batch rows seen since tracking began
    token_id: int
    marked: str = ""  # the text with this token in [[ ]]


class TextTracker:
    """Keeps, per latent, the `top_k` (activation, text, token, position) seen so far."""

    def __init__(self, n_latents: int, top_k: int, tokenizer=None, dedupe: bool = True):
        self.n_latents = n_latents
        self.top_k = top_k
        self.tokenizer = tokenizer
        self.dedupe = dedupe
        self.examples = TopKExamples(2 * top_k if dedupe else top_k, num_features=n_latents)
        self.num_tokens = 0  # global token ids handed out so far
        self.num_text_rows = 0
        empty = torch.empty(0, dtype=torch.long)
        # Metadata of the token ids still ranked, sorted by id (ids only ever grow).
        self._ids, self._text_row, self._position, self._token_id = empty, empty, empty, empty
        self._texts: dict[int, torch.Tensor] = {}  # text row -> token ids of its real tokens
        self._decoded: dict[int, str] = {}

    def update(
        self, codes, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor | None
    ) -> None:
        """Offer one batch's `SparseCodes` (padding dropped) and the batch's token ids [B, T]."""
        num_rows = len(codes)
        first_id = self.num_tokens
        token_ids_N = torch.arange(first_id, first_id + num_rows)
        positive_NK = codes.values_NK > 0
        if positive_NK.any():
            num_slots = codes.values_NK.shape[1]
            self.examples.update_sparse(
                codes.values_NK[positive_NK].unsqueeze(1),
                codes.indices_NK[positive_NK].unsqueeze(1),
                token_ids_N.repeat_interleave(num_slots)[positive_NK.reshape(-1)],
            )
        self._remember(codes, first_id, input_ids_BT, attention_mask_BT)
        self.num_tokens += num_rows
        self.num_text_rows += input_ids_BT.shape[0]

    def _remember(self, codes, first_id: int, input_ids_BT, attention_mask_BT) -> None:
        ranked = self.examples.row_ids().reshape(-1)
        ranked = torch.unique(ranked[ranked >= 0])
        new_N = ranked[ranked >= first_id] - first_id
        if new_N.numel():
            input_ids_BT = input_ids_BT.detach().cpu()
            batch_N, position_N = codes.batch_N[new_N], codes.position_N[new_N]
            self._ids = torch.cat([self._ids, new_N + first_id])
            self._text_row = torch.cat([self._text_row, batch_N + self.num_text_rows])
            self._position = torch.cat([self._position, position_N])
            self._token_id = torch.cat([self._token_id, input_ids_BT[batch_N, position_N]])
            for b in torch.unique(batch_N).tolist():
                ids_T = input_ids_BT[b]
                if attention_mask_BT is not None:
                    ids_T = ids_T[attention_mask_BT[b].detach().cpu().bool()]
                self._texts[self.num_text_rows + b] = ids_T.clone()
        keep = torch.isin(self._ids, ranked)
        if not bool(keep.all()):
            self._ids, self._text_row = self._ids[keep], self._text_row[keep]
            self._position, self._token_id = self._position[keep], self._token_id[keep]
            live = set(torch.unique(self._text_row).tolist())
            for row in [row for row in self._texts if row not in live]:
                del self._texts[row]
                self._decoded.pop(row, None)

    def _text(self, row: int) -> str:
        if row not in self._decoded:
            self._decoded[row] = self._require_tokenizer().decode(
                self._texts[row].tolist(), skip_special_tokens=True
            )
        return self._decoded[row]

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "no tokenizer to show texts with: attach the SAE with lm.attach_sae (which "
                "gives it the model's tokenizer) or pass tokenizer= to enable_text_tracking"
            )
        return self.tokenizer

    def top_texts(self, neuron_idx: int) -> list[TopText]:
        """The latent's top activations, best first (fewer than top_k if it fired less)."""
        return self._entries(
            self.examples.values()[neuron_idx], self.examples.row_ids()[neuron_idx]
        )

    def all_top_texts(self) -> list[list[TopText]]:
        """`top_texts` of every latent, reading the ranking once."""
        values_FS, ids_FS = self.examples.values(), self.examples.row_ids()
        return [self._entries(values_FS[f], ids_FS[f]) for f in range(self.n_latents)]

    def _entries(self, values_S: torch.Tensor, ids_S: torch.Tensor) -> list[TopText]:
        filled = ids_S >= 0
        values_S, ids_S = values_S[filled], ids_S[filled]
        if not ids_S.numel():
            return []
        where = torch.searchsorted(self._ids, ids_S)
        tokenizer = self._require_tokenizer()
        renderer = TokenRenderer(tokenizer)
        entries, seen = [], set()
        for score, i in zip(values_S.tolist(), where.tolist(), strict=True):
            row, token_id = int(self._text_row[i]), int(self._token_id[i])
            text, position = self._text(row), int(self._position[i])
            if self.dedupe and (text, position) in seen:
                continue
            seen.add((text, position))
            ids = self._texts[row].tolist()
            entries.append(
                TopText(
                    score=score,
                    text=text,
                    token=tokenizer.decode([token_id]),
                    position=position,
                    text_row=row,
                    token_id=token_id,
                    marked=renderer.context(ids, position)[0] if position < len(ids) else text,
                )
            )
            if len(entries) == self.top_k:
                break
        return entries
