"""The token plan: every token gets exactly one row, windows, units, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.store.corpus import Document
from pipeline.store.plan import (
    PlanConfig,
    build_plan,
    special_tokens,
    tokenize_documents,
)
from pipeline.store.windows import WindowSpec, layout_shard
from tests.store_helpers import minilm_tokenizer, pydoc_documents, small_plan

CLS, SEP = 101, 102


def content_by_doc(plan):
    """doc_id -> token ids of the non-special rows, in row order."""
    keep = ~plan.is_special
    return {
        int(doc): plan.token_id[keep & (plan.doc_id == doc)] for doc in np.unique(plan.doc_id[keep])
    }


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_every_document_token_gets_exactly_one_row(mode):
    docs = pydoc_documents(4)
    plan = small_plan(mode=mode)
    expected = tokenize_documents(docs, minilm_tokenizer())
    got = content_by_doc(plan)
    assert sorted(got) == [d.doc_id for d in docs]
    for doc, ids in zip(docs, expected, strict=True):
        np.testing.assert_array_equal(got[doc.doc_id], ids)
    assert plan.stats.num_tokens == sum(len(ids) for ids in expected)


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_windows_are_wrapped_and_never_longer_than_context(mode):
    plan = small_plan(mode=mode)
    for w in range(plan.num_windows):
        ids = plan.window_token_ids(w)
        assert 3 <= len(ids) <= 48
        assert ids[0] == CLS and ids[-1] == SEP
        start, stop = plan.window_rows(w)
        assert plan.is_special[start] and plan.is_special[stop - 1]
        np.testing.assert_array_equal(plan.position[start:stop], np.arange(stop - start))
        assert (plan.window[start:stop] == w).all()


def test_window_offsets_are_prefix_sums_of_window_lengths():
    plan = small_plan()
    lengths = np.bincount(plan.window, minlength=plan.num_windows)
    np.testing.assert_array_equal(np.diff(plan.window_offsets), lengths)
    assert plan.window_offsets[0] == 0 and plan.window_offsets[-1] == plan.num_rows


def test_packing_fills_every_window_but_the_last():
    plan = small_plan(mode="packing")
    lengths = np.diff(plan.window_offsets)
    assert (lengths[:-1] == 48).all() and lengths[-1] <= 48


def test_packing_puts_one_special_separator_after_each_document_owned_by_it():
    plan = small_plan(mode="packing")
    window_last = np.zeros(plan.num_rows, dtype=bool)
    window_last[plan.window_offsets[1:] - 1] = True
    separators = np.flatnonzero(plan.is_special & (plan.position != 0) & ~window_last)
    assert len(separators) == 4
    assert (plan.token_id[separators] == SEP).all()
    for row in separators:
        assert plan.doc_id[row - 1] == plan.doc_id[row]
    assert plan.doc_id[separators].tolist() == [0, 1, 2, 3]


def test_document_mode_windows_hold_one_document_and_keep_last_window_short():
    plan = small_plan(mode="document")
    budget = 48 - 2
    for doc_id, ids in content_by_doc(plan).items():
        windows = np.unique(plan.window[plan.doc_id == doc_id])
        assert len(windows) == -(-len(ids) // budget)
        for w in windows:
            start, stop = plan.window_rows(int(w))
            assert (plan.doc_id[start:stop] == doc_id).all()
        last = plan.window_rows(int(windows[-1]))
        assert last[1] - last[0] == len(ids) - budget * (len(windows) - 1) + 2


def test_units_partition_rows_and_share_straddling_windows():
    plan = small_plan(rows_per_unit=500)
    ranges = [plan.unit_rows(u) for u in range(plan.num_units)]
    assert ranges[0][0] == 0 and ranges[-1][1] == plan.num_rows
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    for u, (start, stop) in enumerate(ranges):
        windows = plan.windows_for_unit(u)
        assert windows == sorted(set(plan.window[start:stop].tolist()))
    straddling = plan.window[500]
    assert plan.window[499] == straddling  # 500 is not a multiple of 48
    assert straddling in plan.windows_for_unit(0) and straddling in plan.windows_for_unit(1)


def test_unit_out_of_range_is_a_value_error():
    plan = small_plan()
    with pytest.raises(ValueError, match="unit must be in"):
        plan.unit_rows(plan.num_units)


def test_max_tokens_takes_a_prefix_and_cuts_the_last_window():
    full = small_plan()
    cut = small_plan(max_tokens=1000)
    assert cut.num_rows == 1000 and cut.stats.truncated_by_max_tokens
    assert not full.stats.truncated_by_max_tokens
    for name in ("token_id", "doc_id", "window", "position", "is_special"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(full, name)[:1000])
    assert cut.window_offsets[-1] == 1000
    last = cut.window_token_ids(cut.num_windows - 1)
    assert len(last) == 1000 - 20 * 48 and last[-1] != SEP
    assert cut.stats.num_tokens == full.stats.num_tokens


def test_build_is_deterministic_and_fingerprint_tracks_the_rows():
    docs = pydoc_documents(3)
    tokenizer = minilm_tokenizer()
    a = build_plan(docs, tokenizer, context_length=48, rows_per_unit=100)
    b = build_plan(docs, tokenizer, context_length=48, rows_per_unit=100)
    c = build_plan(docs, tokenizer, context_length=64, rows_per_unit=100)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_empty_documents_are_skipped_counted_and_keep_ids():
    docs = [
        Document(0, "a", "hello world"),
        Document(1, "b", "   \n\t"),
        Document(2, "c", ""),
        Document(3, "d", "bye caf\ufffd", num_replaced_chars=1),
    ]
    plan = build_plan(docs, minilm_tokenizer(), context_length=16)
    assert plan.stats.num_documents == 4
    assert plan.stats.num_skipped_empty == 2
    assert plan.stats.num_replaced_chars == 1
    assert set(plan.doc_id.tolist()) == {0, 3}
    assert plan.docs.column("num_tokens").to_pylist()[1:3] == [0, 0]
    assert plan.docs.column("doc_id").to_pylist() == [0, 1, 2, 3]


def test_corpus_without_tokens_is_a_clear_error():
    docs = [Document(0, "a", ""), Document(1, "b", "  ")]
    with pytest.raises(ValueError, match="corpus produced no tokens: 2 documents, 2 of them"):
        build_plan(docs, minilm_tokenizer(), context_length=16)


def test_context_length_must_leave_room_for_content():
    with pytest.raises(ValueError, match="context_length must exceed the 2 special tokens"):
        build_plan(pydoc_documents(1), minilm_tokenizer(), context_length=2)


def test_plan_config_names_invalid_fields():
    with pytest.raises(ValueError, match="mode must be one of"):
        PlanConfig(context_length=8, mode="sliding")
    with pytest.raises(ValueError, match="rows_per_unit must be >= 1"):
        PlanConfig(context_length=8, rows_per_unit=0)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        PlanConfig(context_length=8, max_tokens=0)


def test_long_documents_do_not_trigger_the_max_length_warning():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        tokenize_documents([Document(0, "long", "word " * 2000)], minilm_tokenizer())
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "longer than the specified maximum" in r.getMessage()]


def test_tokenizer_is_not_mutated():
    tokenizer = minilm_tokenizer()
    before = (tokenizer.model_max_length, tokenizer.padding_side, tokenizer.truncation_side)
    small_plan(num_docs=2, context_length=40)
    assert (tokenizer.model_max_length, tokenizer.padding_side, tokenizer.truncation_side) == before


def test_minilm_wraps_windows_in_cls_and_sep():
    assert special_tokens(minilm_tokenizer()) == ((CLS,), (SEP,))


def test_gpt2_style_tokenizer_packs_with_eos_and_no_wrappers(bpe_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    plan = build_plan(pydoc_documents(2), tokenizer, context_length=32)
    eos = tokenizer.eos_token_id
    assert special_tokens(tokenizer) == ((), ())
    np.testing.assert_array_equal(
        np.flatnonzero(plan.is_special), np.flatnonzero(plan.token_id == eos)
    )
    assert int(plan.is_special.sum()) == 2
    assert (np.diff(plan.window_offsets)[:-1] == 32).all()


def test_layout_places_prefix_suffix_and_separators():
    spec = WindowSpec(budget=3, mode="packing", prefix=(1,), suffix=(2,), separator=0)
    rows = layout_shard(
        [np.array([5, 6, 7], np.int32), np.array([8], np.int32)],
        np.array([10, 12]),
        spec,
        content_start=0,
        window_start=0,
        close=True,
    ).rows
    # content stream 5 6 7 0 | 8 0 -> windows [5 6 7] [0 8 0]
    assert rows.token_id.tolist() == [1, 5, 6, 7, 2, 1, 0, 8, 0, 2]
    assert rows.doc_id.tolist() == [10, 10, 10, 10, 10, 10, 10, 12, 12, 12]
    assert rows.is_special.tolist() == [1, 0, 0, 0, 1, 1, 1, 0, 1, 1]
    assert rows.window.tolist() == [0] * 5 + [1] * 5
    assert rows.position.tolist() == [0, 1, 2, 3, 4] * 2
