"""One way to show a token in its context: decoded text with the token marked, and the raw token.

The token table holds tokenizer pieces (`Ġthe`, `##ing`, `[CLS]`), which read badly in a
table of examples. The context of an example is decoded by the store's own tokenizer, as
the text before the token, the token's own text and the text after it, special tokens
skipped (an example that is itself a special token shows as its name, `[CLS]`); the raw
piece stays in the `token` column. A token's own text is what decoding
adds when the token is appended (so `##ing` shows as `ing` glued to its word, and `Ġthe`
as ` the`); decoding it alone would lose the spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

MARK_OPEN, MARK_CLOSE = "[[", "]]"


class TokenRenderer:
    """Renders tokens of one tokenizer (stage-2 tables, text tracking, reports)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def split(self, ids: Sequence[int], index: int) -> tuple[str, str, str]:
        """(text before, the token's text, text after) of ids[index] within `ids`."""
        before = self.decode(ids[:index])
        through = self.decode(ids[: index + 1])
        whole = self.decode(ids)
        token = through[len(before) :] if through.startswith(before) else self.decode([ids[index]])
        after = (
            whole[len(through) :] if whole.startswith(through) else self.decode(ids[index + 1 :])
        )
        if not token:  # a special token decodes to nothing: show it as itself ("[CLS]")
            token = self.tokenizer.convert_ids_to_tokens(int(ids[index]))
        return before, token, after

    def context(self, ids: Sequence[int], index: int) -> tuple[str, str]:
        """(context with the token marked in [[ ]], the token's text)."""
        before, token, after = self.split(ids, index)
        return f"{before}{MARK_OPEN}{token}{MARK_CLOSE}{after}", token

    def pieces(self, previous_ids: Sequence[int], ids: Sequence[int]) -> list[str]:
        """Each token's own text, given the token before it (-1: none), for many tokens at once.

        The text decoding adds when ids[i] follows previous_ids[i] (`##ing` -> `ing`, `Ġthe`
        -> ` the`); special tokens give "". Two batched decodes, so a dashboard's thousands
        of context tokens cost milliseconds, not a decode each.
        """
        pairs = [[p, t] if p >= 0 else [t] for p, t in zip(previous_ids, ids, strict=True)]
        heads = [[p] if p >= 0 else [] for p in previous_ids]
        decode = self.tokenizer.batch_decode
        options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
        both, before = decode(pairs, **options), decode(heads, **options)
        return [
            whole[len(head) :] if whole.startswith(head) else whole
            for whole, head in zip(both, before, strict=True)
        ]
