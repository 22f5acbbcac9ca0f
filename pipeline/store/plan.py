"""The token plan: which token every row of a store is, decided before any model runs.

Documents are tokenized without special tokens and never truncated: we cut windows
ourselves (see windows.py), wrapping each with the tokenizer's own special tokens, so the
model sees exactly what it would see for that text.

A store is planned shard by shard (pipeline/store/planner.py) and never held whole. This
module holds what every shard shares: the config, the tokenizer-derived `WindowSpec`,
tokenization, and `build_plan`, which lays out a small corpus in memory in one piece. The
streamed planner is tested against `build_plan`: any shard split gives the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.store.corpus import Document
from pipeline.store.windows import RowArrays, WindowSpec, layout_shard

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PLAN_MODES = ("packing", "document")
TOKEN_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("doc_id", pa.int64()),
        ("window", pa.int64()),
        ("position", pa.int32()),
        ("token_id", pa.int32()),
        ("is_special", pa.bool_()),
        ("token", pa.string()),
    ]
)
_PROBE_TEXT = "hello world"


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """How documents become rows.

    context_length: tokens per window, special tokens included (the model's input length).
    mode: "packing" (documents joined by a separator, cut into full windows) or
        "document" (each document alone; its last window is kept short).
    rows_per_unit: rows per unit of work; one unit = one Zarr shard = one commit.
    max_tokens: keep only the first this-many rows of the plan (None: all).
    """

    context_length: int
    mode: str = "packing"
    rows_per_unit: int = 4096
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PLAN_MODES:
            raise ValueError(f"mode must be one of {list(PLAN_MODES)}, got {self.mode!r}")
        if self.context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {self.context_length}")
        if self.rows_per_unit < 1:
            raise ValueError(f"rows_per_unit must be >= 1, got {self.rows_per_unit}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")


@dataclass(frozen=True, kw_only=True)
class PlanStats:
    """Counts about the corpus and the plan, recorded in store.json."""

    num_documents: int  # documents read, including skipped ones
    num_skipped_empty: int  # empty or whitespace-only documents (no rows)
    num_replaced_chars: int  # U+FFFD inserted while decoding invalid UTF-8
    num_tokens: int  # document tokens (no separators or wrappers), before max_tokens
    num_rows: int  # rows in the plan, special tokens included, after max_tokens
    num_windows: int
    truncated_by_max_tokens: bool
    num_shards: int = 1  # corpus shards read (planning stops early under max_tokens)

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True, eq=False)
class TokenPlan:
    """A whole plan in memory: for small corpora, tests, and as the streamed planner's
    reference. Stores never hold one; see planner.py."""

    config: PlanConfig
    rows: RowArrays
    stats: PlanStats
    docs: pa.Table  # doc_id int64, source string, text string, num_tokens int64

    token_id = property(lambda self: self.rows.token_id)
    doc_id = property(lambda self: self.rows.doc_id)
    window = property(lambda self: self.rows.window)
    position = property(lambda self: self.rows.position)
    is_special = property(lambda self: self.rows.is_special)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def window_offsets(self) -> np.ndarray:
        """int64 [W + 1]: window w covers rows [off[w], off[w + 1])."""
        counts = np.bincount(self.rows.window, minlength=self.num_windows)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_windows(self) -> int:
        return int(self.rows.window[-1]) + 1 if self.num_rows else 0

    @property
    def num_units(self) -> int:
        return -(-self.num_rows // self.config.rows_per_unit)

    def unit_rows(self, unit: int) -> tuple[int, int]:
        """(start, stop) rows of a unit."""
        return unit_rows(unit, self.config.rows_per_unit, self.num_rows)

    def windows_for_unit(self, unit: int) -> list[int]:
        """Windows with at least one row in the unit, in order."""
        start, stop = self.unit_rows(unit)
        return list(range(int(self.rows.window[start]), int(self.rows.window[stop - 1]) + 1))

    def window_rows(self, window: int) -> tuple[int, int]:
        """(start, stop) rows of a window."""
        if not 0 <= window < self.num_windows:
            raise ValueError(f"window must be in [0, {self.num_windows}), got {window}")
        offsets = self.window_offsets
        return int(offsets[window]), int(offsets[window + 1])

    def window_token_ids(self, window: int) -> np.ndarray:
        """The model input of a window (int32), special tokens included."""
        start, stop = self.window_rows(window)
        return self.rows.token_id[start:stop]

    def fingerprint(self) -> str:
        """sha256 of the row arrays: equal plans give equal rows."""
        return rows_digest(self.rows)


def unit_rows(unit: int, rows_per_unit: int, num_rows: int) -> tuple[int, int]:
    """(start, stop) rows of unit `unit` of a store of `num_rows` rows."""
    num_units = -(-num_rows // rows_per_unit)
    if not 0 <= unit < num_units:
        raise ValueError(f"unit must be in [0, {num_units}), got {unit}")
    start = unit * rows_per_unit
    return start, min(start + rows_per_unit, num_rows)


class RowsDigest:
    """sha256 over the row arrays, fed in chunks: the same digest however rows are cut.

    One hash per column over its little-endian bytes, then one over the column names,
    dtypes, the row count and the column hashes.
    """

    COLUMNS = (("token_id", "<i4"), ("doc_id", "<i8"), ("window", "<i8"), ("position", "<i4"))

    def __init__(self) -> None:
        names = [name for name, _ in self.COLUMNS] + ["is_special"]
        self._columns = {name: hashlib.sha256() for name in names}
        self.num_rows = 0

    def update(self, rows: RowArrays) -> RowsDigest:
        for name, dtype in self.COLUMNS:
            self._columns[name].update(np.ascontiguousarray(getattr(rows, name), dtype).data)
        self._columns["is_special"].update(np.ascontiguousarray(rows.is_special, "|b1").data)
        self.num_rows += len(rows)
        return self

    def hexdigest(self) -> str:
        digest = hashlib.sha256(f"rows:{self.num_rows}\0".encode())
        for name, column in self._columns.items():
            digest.update(f"{name}:{column.hexdigest()}\0".encode())
        return digest.hexdigest()


def rows_digest(rows: RowArrays) -> str:
    """`RowsDigest` of rows held whole."""
    return RowsDigest().update(rows).hexdigest()


def is_blank(text: str) -> bool:
    return not text or text.isspace()


def tokenize_documents(
    documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase, batch_size: int = 256
) -> list[np.ndarray]:
    """Token ids (int32, no special tokens, never truncated) of each document, in order.

    Blank documents get an empty array without calling the tokenizer.
    """
    result = [np.zeros(0, dtype=np.int32) for _ in documents]
    todo = [i for i, doc in enumerate(documents) if not is_blank(doc.text)]
    for lo in range(0, len(todo), batch_size):
        batch = todo[lo : lo + batch_size]
        encoded = tokenizer(
            [documents[i].text for i in batch],
            add_special_tokens=False,
            verbose=False,  # silences "sequence length longer than max": we cut windows
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        for i, ids in zip(batch, encoded, strict=True):
            result[i] = np.asarray(ids, dtype=np.int32)
    return result


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix) ids the tokenizer wraps a single sequence with."""
    plain = tokenizer(_PROBE_TEXT, add_special_tokens=False, verbose=False)["input_ids"]
    build = getattr(tokenizer, "build_inputs_with_special_tokens", None)
    if build is not None:
        wrapped = list(build(list(plain)))
    else:
        wrapped = tokenizer(_PROBE_TEXT, add_special_tokens=True, verbose=False)["input_ids"]
    n = len(plain)
    for at in range(len(wrapped) - n + 1):
        if wrapped[at : at + n] == plain:
            prefix, suffix = tuple(wrapped[:at]), tuple(wrapped[at + n :])
            if len(prefix) + len(suffix) == tokenizer.num_special_tokens_to_add():
                return prefix, suffix
    raise ValueError(
        f"cannot tell where {type(tokenizer).__name__} puts its special tokens "
        f"(plain {plain}, with specials {wrapped})"
    )


def separator_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token that ends each document when packing: sep if the tokenizer has one, else eos."""
    if tokenizer.sep_token_id is not None:
        return int(tokenizer.sep_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return None


def window_spec(tokenizer: PreTrainedTokenizerBase, config: PlanConfig) -> WindowSpec:
    """The tokenizer's wrappers and separator, checked against the config."""
    prefix, suffix = special_tokens(tokenizer)
    budget = config.context_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(
            f"context_length must exceed the {len(prefix) + len(suffix)} special tokens "
            f"the tokenizer adds, got {config.context_length}"
        )
    separator = separator_id(tokenizer)
    if config.mode == "packing" and separator is None:
        raise ValueError("mode='packing' needs a tokenizer with a sep or eos token; use 'document'")
    return WindowSpec(
        budget=budget, mode=config.mode, prefix=prefix, suffix=suffix, separator=separator
    )


def build_plan(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    context_length: int,
    mode: str = "packing",
    rows_per_unit: int = 4096,
    max_tokens: int | None = None,
) -> TokenPlan:
    """Tokenize every document once and lay the tokens out as windows, all in memory."""
    config = PlanConfig(
        context_length=context_length, mode=mode, rows_per_unit=rows_per_unit, max_tokens=max_tokens
    )
    documents = list(documents)
    spec = window_spec(tokenizer, config)
    token_ids = tokenize_documents(documents, tokenizer)
    kept = [i for i, ids in enumerate(token_ids) if len(ids) > 0]
    blank = sum(is_blank(doc.text) for doc in documents)
    if not kept:
        raise ValueError(
            f"corpus produced no tokens: {len(documents)} documents, "
            f"{blank} of them empty or whitespace-only"
        )
    layout = layout_shard(
        [token_ids[i] for i in kept],
        np.array([documents[i].doc_id for i in kept], dtype=np.int64),
        spec,
        content_start=0,
        window_start=0,
        close=True,
    )
    rows = layout.rows
    full_rows = len(rows)
    if max_tokens is not None:
        rows = rows.head(max_tokens)
    stats = PlanStats(
        num_documents=len(documents),
        num_skipped_empty=blank,
        num_replaced_chars=sum(doc.num_replaced_chars for doc in documents),
        num_tokens=int(sum(len(ids) for ids in token_ids)),
        num_rows=len(rows),
        num_windows=int(rows.window[-1]) + 1,
        truncated_by_max_tokens=len(rows) < full_rows,
    )
    docs = pa.table(
        {
            "doc_id": pa.array([doc.doc_id for doc in documents], pa.int64()),
            "source": pa.array([doc.source for doc in documents], pa.string()),
            "text": pa.array([doc.text for doc in documents], pa.string()),
            "num_tokens": pa.array([len(ids) for ids in token_ids], pa.int64()),
        }
    )
    return TokenPlan(config=config, rows=rows, stats=stats, docs=docs)
