"""Cut tokenized documents into model windows, one corpus shard at a time: pure numpy.

Legend: N rows, K content tokens (document tokens plus, in packing mode, one separator
after each document), G window segments, P / S special tokens the tokenizer puts before /
after every window (BERT: [CLS] / [SEP]; GPT-2: none), B = context_length - P - S.

Windows are defined on the *global* content stream, so a shard can be laid out knowing
only where it starts (its first content token's global index, and in document mode its
first window's index) and nothing else about the shards before it:

- packing: content token g (global) is in window g // B, at position P + g % B. A window
  may start in one shard and end in the next; each shard emits its own part of it (the
  prefix goes with the window's first content token, the suffix with its last). The last
  window of the corpus is closed by `closing_suffix` once the planner knows it is last.
- document: each document is cut alone into windows of at most B tokens, so windows never
  cross shards.

So the concatenation of every shard's rows equals the layout of the whole corpus at once,
whatever the shard sizes: tested against `layout_shard(..., close=True)` on everything.

Special tokens added around a window take the doc_id of the content token next to them
(prefix: the window's first content token; suffix: its last). A separator belongs to the
document before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class RowArrays:
    """Per-row arrays (length N), window ids global."""

    token_id: np.ndarray  # int32 [N]
    doc_id: np.ndarray  # int64 [N]
    window: np.ndarray  # int64 [N]
    position: np.ndarray  # int32 [N], position inside its window
    is_special: np.ndarray  # bool [N], inserted by the plan (wrappers, separators)

    def __len__(self) -> int:
        return len(self.token_id)

    def head(self, num_rows: int) -> RowArrays:
        """The first `num_rows` rows (a window crossing the cut ends early)."""
        return RowArrays(**{name: getattr(self, name)[:num_rows] for name in _FIELDS})

    def tail(self, start: int) -> RowArrays:
        """The rows from `start` on."""
        return RowArrays(**{name: getattr(self, name)[start:] for name in _FIELDS})

    @staticmethod
    def empty() -> RowArrays:
        return RowArrays(
            token_id=np.zeros(0, np.int32),
            doc_id=np.zeros(0, np.int64),
            window=np.zeros(0, np.int64),
            position=np.zeros(0, np.int32),
            is_special=np.zeros(0, bool),
        )

    @staticmethod
    def concat(parts: list[RowArrays]) -> RowArrays:
        return RowArrays(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS}
        )


_FIELDS = ("token_id", "doc_id", "window", "position", "is_special")


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """How content becomes windows; fixed per store."""

    budget: int  # B: content tokens per window
    mode: str  # "packing" or "document"
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    separator: int | None  # packing only: the token appended after each document


@dataclass(frozen=True, kw_only=True)
class ShardLayout:
    rows: RowArrays
    num_content: int  # content tokens of the shard (separators included)
    num_windows_started: int  # windows whose first content token is in the shard
    last_doc_id: int | None  # doc of the shard's last content token (None: no content)


def layout_shard(
    token_ids: list[np.ndarray],
    doc_ids: np.ndarray,
    spec: WindowSpec,
    *,
    content_start: int,
    window_start: int,
    close: bool = False,
) -> ShardLayout:
    """Rows of one shard's documents (token arrays in doc order, none empty).

    content_start: global index of the shard's first content token.
    window_start: global index of the shard's first window (document mode only; packing
        derives windows from content_start).
    close: the content stream ends with this shard; give its last window the suffix.
    """
    if not token_ids:
        return ShardLayout(
            rows=RowArrays.empty(), num_content=0, num_windows_started=0, last_doc_id=None
        )
    lengths_D = np.array([len(t) for t in token_ids], dtype=np.int64)
    assert lengths_D.min() > 0 and len(doc_ids) == len(token_ids)
    tokens_K, doc_K, special_K, lengths_D = _content_stream(
        token_ids, np.asarray(doc_ids, np.int64), lengths_D, spec
    )
    num_content = len(tokens_K)
    budget = spec.budget
    if spec.mode == "packing":
        global_K = content_start + np.arange(num_content, dtype=np.int64)
        window_K = global_K // budget
        offset_K = global_K % budget  # content index inside the window
    else:
        windows_per_doc_D = -(-lengths_D // budget)
        first_window_D = np.cumsum(windows_per_doc_D) - windows_per_doc_D
        doc_start_K = np.repeat(np.cumsum(lengths_D) - lengths_D, lengths_D)
        local_K = np.arange(num_content, dtype=np.int64) - doc_start_K
        window_K = window_start + np.repeat(first_window_D, lengths_D) + local_K // budget
        offset_K = local_K % budget
    # Segments: maximal runs of one window inside this shard.
    starts_G = np.flatnonzero(np.r_[True, window_K[1:] != window_K[:-1]])
    ends_G = np.r_[starts_G[1:], num_content]
    has_prefix_G = offset_K[starts_G] == 0
    if spec.mode == "packing":
        has_suffix_G = offset_K[ends_G - 1] == budget - 1
        if close:
            has_suffix_G[-1] = True
    else:
        has_suffix_G = np.ones(len(starts_G), dtype=bool)
    rows = _wrap_segments(
        tokens_K, doc_K, special_K, window_K, offset_K, starts_G, ends_G, has_prefix_G,
        has_suffix_G, spec,
    )  # fmt: skip
    return ShardLayout(
        rows=rows,
        num_content=num_content,
        num_windows_started=int(has_prefix_G.sum()),
        last_doc_id=int(doc_K[-1]),
    )


def closing_suffix(spec: WindowSpec, *, num_content: int, last_doc_id: int) -> RowArrays:
    """Packing: the suffix rows of the corpus's last window, when no shard closed it."""
    if spec.mode != "packing" or not spec.suffix or num_content % spec.budget == 0:
        return RowArrays.empty()
    window = (num_content - 1) // spec.budget
    first = len(spec.prefix) + num_content - window * spec.budget
    size = len(spec.suffix)
    return RowArrays(
        token_id=np.asarray(spec.suffix, dtype=np.int32),
        doc_id=np.full(size, last_doc_id, dtype=np.int64),
        window=np.full(size, window, dtype=np.int64),
        position=np.arange(first, first + size, dtype=np.int32),
        is_special=np.ones(size, dtype=bool),
    )


def _content_stream(token_ids, doc_ids_D, lengths_D, spec: WindowSpec):
    """Concatenate documents; in packing mode append a separator after each one."""
    if spec.mode == "document":
        tokens_K = np.concatenate(token_ids).astype(np.int32, copy=False)
        return tokens_K, np.repeat(doc_ids_D, lengths_D), np.zeros(len(tokens_K), bool), lengths_D
    assert spec.separator is not None
    lengths_D = lengths_D + 1
    tokens_K = np.empty(int(lengths_D.sum()), dtype=np.int32)
    sep_rows = np.cumsum(lengths_D) - 1
    special_K = np.zeros(len(tokens_K), dtype=bool)
    special_K[sep_rows] = True
    tokens_K[~special_K] = np.concatenate(token_ids)
    tokens_K[sep_rows] = spec.separator
    return tokens_K, np.repeat(doc_ids_D, lengths_D), special_K, lengths_D


def _wrap_segments(
    tokens_K, doc_K, special_K, window_K, offset_K, starts_G, ends_G, has_prefix_G,
    has_suffix_G, spec: WindowSpec,
) -> RowArrays:  # fmt: skip
    num_prefix, num_suffix = len(spec.prefix), len(spec.suffix)
    content_len_G = ends_G - starts_G
    prefix_len_G = num_prefix * has_prefix_G
    rows_G = content_len_G + prefix_len_G + num_suffix * has_suffix_G
    seg_offsets = np.zeros(len(starts_G) + 1, dtype=np.int64)
    np.cumsum(rows_G, out=seg_offsets[1:])
    num_rows = int(seg_offsets[-1])

    token_N = np.empty(num_rows, dtype=np.int32)
    doc_N = np.empty(num_rows, dtype=np.int64)
    window_N = np.repeat(window_K[starts_G], rows_G)
    position_N = np.empty(num_rows, dtype=np.int32)
    special_N = np.ones(num_rows, dtype=bool)

    segment_K = np.repeat(np.arange(len(starts_G)), content_len_G)
    content_rows_K = (
        seg_offsets[:-1][segment_K] + prefix_len_G[segment_K] + np.arange(len(tokens_K))
        - starts_G[segment_K]
    )  # fmt: skip
    token_N[content_rows_K] = tokens_K
    doc_N[content_rows_K] = doc_K
    special_N[content_rows_K] = special_K
    position_N[content_rows_K] = num_prefix + offset_K

    if num_prefix and has_prefix_G.any():
        at = np.flatnonzero(has_prefix_G)
        rows = seg_offsets[at][:, None] + np.arange(num_prefix)
        token_N[rows] = np.asarray(spec.prefix, dtype=np.int32)
        doc_N[rows] = doc_K[starts_G[at]][:, None]
        position_N[rows] = np.arange(num_prefix, dtype=np.int32)
    if num_suffix and has_suffix_G.any():
        at = np.flatnonzero(has_suffix_G)
        rows = (seg_offsets[at + 1] - num_suffix)[:, None] + np.arange(num_suffix)
        token_N[rows] = np.asarray(spec.suffix, dtype=np.int32)
        doc_N[rows] = doc_K[ends_G[at] - 1][:, None]
        last_position = num_prefix + offset_K[ends_G[at] - 1]
        position_N[rows] = (last_position[:, None] + 1 + np.arange(num_suffix)).astype(np.int32)
    return RowArrays(
        token_id=token_N,
        doc_id=doc_N,
        window=window_N,
        position=position_N,
        is_special=special_N,
    )
