"""Cut tokenized documents into model windows: pure numpy, no tokenizer.

Legend: N rows of the plan, W windows, K content tokens (document tokens plus, in packing
mode, one separator after each document), P / S special tokens the tokenizer puts before /
after every window (BERT: [CLS] / [SEP]; GPT-2: none), B = context_length - P - S.

Content is cut into windows of at most B tokens, then every window is wrapped as
prefix + content + suffix. Because content windows tile the content stream in order,
content token k of window w lands on row k + (P + S) * w + P, so the whole layout is a few
vectorised numpy operations however large the corpus.

Special tokens added around a window take the doc_id of the content token next to them
(prefix: the window's first content token; suffix: its last). A separator belongs to the
document before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class RowArrays:
    """Per-row arrays (length N) and window prefix sums (length W + 1)."""

    token_id: np.ndarray  # int32 [N]
    doc_id: np.ndarray  # int64 [N]
    window: np.ndarray  # int64 [N]
    position: np.ndarray  # int32 [N], position inside its window
    is_special: np.ndarray  # bool [N], inserted by the plan (wrappers, separators)
    window_offsets: np.ndarray  # int64 [W + 1]; window w covers rows [off[w], off[w + 1])


def layout_rows(
    token_ids: list[np.ndarray],
    doc_ids: np.ndarray,
    *,
    budget: int,
    mode: str,
    prefix: tuple[int, ...],
    suffix: tuple[int, ...],
    separator: int | None,
) -> RowArrays:
    """Lay out documents (token arrays, in doc order, none empty) as windows of rows."""
    assert budget >= 1 and len(token_ids) == len(doc_ids) and len(token_ids) > 0
    lengths_D = np.array([len(t) for t in token_ids], dtype=np.int64)
    assert lengths_D.min() > 0
    tokens_K, doc_K, special_K, lengths_D = _content_stream(
        token_ids, np.asarray(doc_ids, np.int64), lengths_D, mode, separator
    )
    num_content = len(tokens_K)
    doc_ends_D = np.cumsum(lengths_D)
    if mode == "packing":
        starts_W = np.arange(0, num_content, budget, dtype=np.int64)
        ends_W = np.minimum(starts_W + budget, num_content)
    else:
        windows_per_doc_D = -(-lengths_D // budget)
        first_window_D = np.cumsum(windows_per_doc_D) - windows_per_doc_D
        num_windows = int(windows_per_doc_D.sum())
        rank_W = np.arange(num_windows) - np.repeat(first_window_D, windows_per_doc_D)
        starts_W = np.repeat(doc_ends_D - lengths_D, windows_per_doc_D) + budget * rank_W
        ends_W = np.minimum(starts_W + budget, np.repeat(doc_ends_D, windows_per_doc_D))
    return _wrap_windows(tokens_K, doc_K, special_K, starts_W, ends_W, prefix, suffix)


def _content_stream(token_ids, doc_ids_D, lengths_D, mode, separator):
    """Concatenate documents; in packing mode append a separator after each one."""
    if mode == "document":
        tokens_K = np.concatenate(token_ids).astype(np.int32, copy=False)
        return tokens_K, np.repeat(doc_ids_D, lengths_D), np.zeros(len(tokens_K), bool), lengths_D
    assert separator is not None
    lengths_D = lengths_D + 1
    tokens_K = np.empty(int(lengths_D.sum()), dtype=np.int32)
    sep_rows = np.cumsum(lengths_D) - 1
    special_K = np.zeros(len(tokens_K), dtype=bool)
    special_K[sep_rows] = True
    tokens_K[~special_K] = np.concatenate(token_ids)
    tokens_K[sep_rows] = separator
    return tokens_K, np.repeat(doc_ids_D, lengths_D), special_K, lengths_D


def _wrap_windows(tokens_K, doc_K, special_K, starts_W, ends_W, prefix, suffix) -> RowArrays:
    num_prefix, num_suffix = len(prefix), len(suffix)
    num_windows = len(starts_W)
    content_len_W = ends_W - starts_W
    window_len_W = content_len_W + num_prefix + num_suffix
    offsets = np.zeros(num_windows + 1, dtype=np.int64)
    np.cumsum(window_len_W, out=offsets[1:])
    num_rows = int(offsets[-1])

    window_N = np.repeat(np.arange(num_windows, dtype=np.int64), window_len_W)
    position_N = (np.arange(num_rows, dtype=np.int64) - offsets[window_N]).astype(np.int32)
    token_N = np.empty(num_rows, dtype=np.int32)
    doc_N = np.empty(num_rows, dtype=np.int64)
    special_N = np.ones(num_rows, dtype=bool)

    window_K = np.repeat(np.arange(num_windows, dtype=np.int64), content_len_W)
    content_rows_K = np.arange(len(tokens_K)) + (num_prefix + num_suffix) * window_K + num_prefix
    token_N[content_rows_K] = tokens_K
    doc_N[content_rows_K] = doc_K
    special_N[content_rows_K] = special_K

    if num_prefix:
        rows = offsets[:-1, None] + np.arange(num_prefix)
        token_N[rows] = np.asarray(prefix, dtype=np.int32)
        doc_N[rows] = doc_K[starts_W][:, None]
    if num_suffix:
        rows = (offsets[1:] - num_suffix)[:, None] + np.arange(num_suffix)
        token_N[rows] = np.asarray(suffix, dtype=np.int32)
        doc_N[rows] = doc_K[ends_W - 1][:, None]
    return RowArrays(
        token_id=token_N,
        doc_id=doc_N,
        window=window_N,
        position=position_N,
        is_special=special_N,
        window_offsets=offsets,
    )


def cut_rows(rows: RowArrays, max_rows: int) -> RowArrays:
    """The first `max_rows` rows; the window that crosses the cut ends early."""
    if max_rows >= len(rows.token_id):
        return rows
    offsets = rows.window_offsets
    num_windows = int(np.searchsorted(offsets[:-1], max_rows, side="left"))
    return RowArrays(
        token_id=rows.token_id[:max_rows].copy(),
        doc_id=rows.doc_id[:max_rows].copy(),
        window=rows.window[:max_rows].copy(),
        position=rows.position[:max_rows].copy(),
        is_special=rows.is_special[:max_rows].copy(),
        window_offsets=np.append(offsets[:num_windows], np.int64(max_rows)),
    )
