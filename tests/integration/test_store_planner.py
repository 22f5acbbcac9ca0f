"""The streamed planner on real disk: parts equal the in-memory plan, resume, limits, reads.

Corpora here are JSONL files of pydoc topics cut into byte ranges of a few kB, so a plan
has many parts, some of them empty (a range inside a long line holds no record).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.store.part_files as part_files_module
import pipeline.store.parts as parts_module
from pipeline.store import ActivationStore, StoreMismatchError, StoreVerificationError, StoreWriter
from pipeline.store.corpus import Corpus
from pipeline.store.plan import TOKEN_SCHEMA, PlanConfig, build_plan
from pipeline.store.plan_index import PlanIndex
from pipeline.store.planner import plan_corpus, start_plan
from tests.store_helpers import (
    HOOKS,
    META,
    jsonl_corpus,
    minilm_tokenizer,
    pydoc_texts,
    token_table,
    unit_activations,
    write_jsonl_corpus,
)

SHARD_BYTES = 2000
NUM_TOPICS = 12


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    """About 40 kB of JSONL: 12 pydoc topics, two of them over 10 kB."""
    return write_jsonl_corpus(
        tmp_path_factory.mktemp("corpus") / "topics.jsonl", pydoc_texts(NUM_TOPICS)
    )


def config(mode="packing", context_length=48, rows_per_unit=500, max_tokens=None) -> PlanConfig:
    return PlanConfig(
        context_length=context_length, mode=mode, rows_per_unit=rows_per_unit, max_tokens=max_tokens
    )


def reference(corpus: Corpus, plan_config: PlanConfig):
    """The whole corpus planned in memory at once."""
    return build_plan(
        list(corpus),
        minilm_tokenizer(),
        context_length=plan_config.context_length,
        mode=plan_config.mode,
        rows_per_unit=plan_config.rows_per_unit,
        max_tokens=plan_config.max_tokens,
    )


def plan_into(root, corpus: Corpus, plan_config: PlanConfig):
    return plan_corpus(root, corpus, minilm_tokenizer(), plan_config, fsync=False)


def stored_tokens(root) -> pa.Table:
    return pq.read_table(root / "tokens")


def stored_docs(root) -> pa.Table:
    return pq.read_table(root / "docs")


def part_records(root) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "plan").glob("part-*.json"))]


def create_store(root, corpus: Corpus, plan_config: PlanConfig, **kwargs) -> StoreWriter:
    return StoreWriter.create_or_open(
        root,
        META,
        HOOKS,
        "float32",
        plan_config,
        lambda at: plan_into(at, corpus, plan_config),
        fsync=False,
        **kwargs,
    )


def data_files(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class ShardReads:
    """Counts `Corpus.read_shard` calls (each one reads and tokenizes a shard)."""

    def __init__(self, monkeypatch):
        self.shards: list[int] = []
        real = Corpus.read_shard

        def counting(corpus, shard):
            self.shards.append(shard.index)
            return real(corpus, shard)

        monkeypatch.setattr(Corpus, "read_shard", counting)


# --- equal to the in-memory plan ---------------------------------------------------------


@pytest.mark.parametrize("shard_bytes", [700, SHARD_BYTES, 10**6])
@pytest.mark.parametrize("mode", ["packing", "document"])
def test_streamed_plan_equals_build_plan_for_any_shard_size(
    tmp_path, corpus_path, mode, shard_bytes
):
    corpus = jsonl_corpus(corpus_path, shard_bytes)
    expected = reference(corpus, config(mode))
    result = plan_into(tmp_path, corpus, config(mode))
    assert stored_tokens(tmp_path).equals(token_table(expected))
    assert stored_docs(tmp_path).equals(expected.docs)
    stats = result.stats.to_dict()
    assert stats.pop("num_shards") == len(corpus.shards())
    assert stats == {k: v for k, v in expected.stats.to_dict().items() if k != "num_shards"}


@pytest.mark.parametrize("shard_bytes", [700, SHARD_BYTES])
@pytest.mark.parametrize("mode", ["packing", "document"])
def test_max_tokens_keeps_the_first_rows_of_build_plan_and_the_documents_read(
    tmp_path, corpus_path, mode, shard_bytes
):
    corpus = jsonl_corpus(corpus_path, shard_bytes)
    expected = reference(corpus, config(mode, max_tokens=1500))
    result = plan_into(tmp_path, corpus, config(mode, max_tokens=1500))
    assert result.num_rows == 1500 and result.stats.truncated_by_max_tokens
    assert stored_tokens(tmp_path).equals(token_table(expected))
    num_read = result.stats.num_documents
    assert num_read < NUM_TOPICS  # later shards were never read
    assert stored_docs(tmp_path).equals(expected.docs.slice(0, num_read))


def test_max_documents_stops_at_that_document_inside_a_shard(tmp_path, corpus_path):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES, max_documents=7)
    expected = reference(corpus, config())
    result = plan_into(tmp_path, corpus, config())
    assert stored_tokens(tmp_path).equals(token_table(expected))
    assert stored_docs(tmp_path).column("doc_id").to_pylist() == list(range(7))
    assert result.stats.num_documents == 7


@pytest.mark.parametrize("shard_bytes", [SHARD_BYTES, 10**6])
@pytest.mark.parametrize("mode", ["packing", "document"])
@pytest.mark.parametrize("cut_from_end", [-1, 1, 2])
def test_max_tokens_near_the_end_flags_truncation_like_build_plan(
    tmp_path, corpus_path, mode, cut_from_end, shard_bytes
):
    # packing, cut 1: only the closing part's [SEP] is cut.
    corpus = jsonl_corpus(corpus_path, shard_bytes)
    max_tokens = reference(corpus, config(mode)).num_rows - cut_from_end
    expected = reference(corpus, config(mode, max_tokens=max_tokens))
    result = plan_into(tmp_path, corpus, config(mode, max_tokens=max_tokens))
    assert stored_tokens(tmp_path).equals(token_table(expected))
    assert result.stats.truncated_by_max_tokens == expected.stats.truncated_by_max_tokens


def test_max_tokens_reached_exactly_before_unread_shards_counts_as_truncated(tmp_path, corpus_path):
    # Document mode, max_tokens = every row: the part of the last topic reaches the limit,
    # and the byte ranges after it (inside that topic's line) are left unread. They hold
    # nothing, but planning cannot know that without reading them, so the plan says it
    # stopped at max_tokens; build_plan, which sees the whole corpus, says it did not.
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    max_tokens = reference(corpus, config("document")).num_rows
    result = plan_into(tmp_path, corpus, config("document", max_tokens=max_tokens))
    assert result.num_rows == max_tokens
    assert result.stats.num_shards < len(corpus.shards())
    assert result.stats.truncated_by_max_tokens
    assert not reference(
        corpus, config("document", max_tokens=max_tokens)
    ).stats.truncated_by_max_tokens


def test_max_tokens_reached_at_a_document_end_inside_a_shard_counts_as_truncated(
    tmp_path, bpe_tokenizer_dir
):
    # A GPT-2 style tokenizer in document mode adds no rows around content, so the first
    # document's tokens fill max_tokens exactly and the shard's later documents are
    # dropped without any row being cut.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    texts = ["hello world", "bye now", "more text here"]
    corpus = jsonl_corpus(write_jsonl_corpus(tmp_path / "c.jsonl", texts), 10**6)
    first = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"])
    limited = config("document", context_length=16, max_tokens=first)
    result = plan_corpus(tmp_path / "s", corpus, tokenizer, limited, fsync=False)
    assert result.num_rows == first and result.stats.num_documents == 1
    assert result.stats.truncated_by_max_tokens


def test_shard_size_moves_part_boundaries_but_not_the_token_table(tmp_path, corpus_path):
    small = plan_into(tmp_path / "small", jsonl_corpus(corpus_path, 700), config())
    large = plan_into(tmp_path / "large", jsonl_corpus(corpus_path, 10**6), config())
    assert len(small.parts) > len(large.parts)
    assert stored_tokens(tmp_path / "small").equals(stored_tokens(tmp_path / "large"))
    assert stored_docs(tmp_path / "small").equals(stored_docs(tmp_path / "large"))
    # The plan fingerprint is a hash of the parts' digests in order, each digest covering
    # its part's rows and documents: so it follows the content *and* where parts are cut,
    # and differs here. That is consistent: shard_bytes is part of the corpus config, so
    # of the store fingerprint, and two shard sizes make two different stores anyway.
    assert small.fingerprint != large.fingerprint


def test_plan_fingerprint_is_reproducible_and_covers_rows_and_document_text(tmp_path):
    # Sources name the file and byte offset, so every corpus here is the same file.
    path = tmp_path / "c.jsonl"
    corpus = jsonl_corpus(write_jsonl_corpus(path, ["hello world", "bye now"]), 10)
    first = plan_into(tmp_path / "first", corpus, config())
    again = plan_into(tmp_path / "again", corpus, config())
    shorter = plan_into(tmp_path / "shorter", corpus, config(context_length=4))
    write_jsonl_corpus(path, ["HELLO WORLD", "bye now"])  # uncased: the same tokens
    upper = plan_into(tmp_path / "upper", corpus, config())
    assert first.fingerprint == again.fingerprint
    assert stored_tokens(tmp_path / "upper").equals(stored_tokens(tmp_path / "first"))
    assert upper.fingerprint != first.fingerprint
    assert shorter.fingerprint != first.fingerprint


# --- boundary cases ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_a_document_longer_than_many_windows_lays_out_like_build_plan(tmp_path, mode):
    texts = ["a short one", "word " * 3000, "after the long one"]
    corpus = jsonl_corpus(write_jsonl_corpus(tmp_path / "c.jsonl", texts), 500)
    assert len(corpus.shards()) > 20  # the long line spans many (empty) byte ranges
    expected = reference(corpus, config(mode))
    plan_into(tmp_path / "s", corpus, config(mode))
    assert expected.num_windows > 50
    assert stored_tokens(tmp_path / "s").equals(token_table(expected))


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_blank_documents_and_an_all_blank_shard_keep_ids_and_make_no_rows(tmp_path, mode):
    texts = ["first words here", "", "   ", "\t", "", " ", "", "last words"]
    corpus = jsonl_corpus(write_jsonl_corpus(tmp_path / "c.jsonl", texts), 40)
    expected = reference(corpus, config(mode))
    result = plan_into(tmp_path / "s", corpus, config(mode))
    records = part_records(tmp_path / "s")
    assert any(r["num_documents"] > 0 and r["num_skipped_empty"] == r["num_documents"]
               and r["row_start"] == r["row_stop"] for r in records)  # fmt: skip
    assert result.stats.num_skipped_empty == 6
    assert stored_docs(tmp_path / "s").equals(expected.docs)
    assert stored_tokens(tmp_path / "s").equals(token_table(expected))


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_a_shard_of_one_token_lays_out_like_build_plan(tmp_path, mode):
    texts = ["the first document", "one", "and the third document"]
    width = max(len(json.dumps({"text": t})) for t in texts) + 1
    # Pad every line to `width` bytes (JSON allows trailing spaces): one line per shard.
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}).ljust(width) + "\n"
                                              for t in texts))  # fmt: skip
    corpus = jsonl_corpus(tmp_path / "c.jsonl", width + 1)
    assert len(corpus.shards()) == 3
    expected = reference(corpus, config(mode, context_length=8))
    plan_into(tmp_path / "s", corpus, config(mode, context_length=8))
    assert [r["num_tokens"] for r in part_records(tmp_path / "s")][:3] == [3, 1, 4]
    assert stored_tokens(tmp_path / "s").equals(token_table(expected))


def test_the_last_partial_window_gets_its_suffix_from_a_closing_part(tmp_path):
    # content: hello world [SEP] bye [SEP] = 5 tokens; budget 4 leaves 1 in window 1.
    corpus = jsonl_corpus(write_jsonl_corpus(tmp_path / "c.jsonl", ["hello world", "bye"]), 15)
    expected = reference(corpus, config(context_length=6))
    plan_into(tmp_path / "s", corpus, config(context_length=6))
    closing = part_records(tmp_path / "s")[-1]
    assert closing["shard"] is None and closing["num_documents"] == 0
    assert closing["row_stop"] - closing["row_start"] == 1
    last = stored_tokens(tmp_path / "s").slice(closing["row_start"])
    assert last.to_pylist() == [
        {"row": closing["row_start"], "doc_id": 1, "window": 1, "position": 2,
         "token_id": 102, "is_special": True, "token": "[SEP]"}
    ]  # fmt: skip
    assert stored_tokens(tmp_path / "s").equals(token_table(expected))
    assert pq.read_table(tmp_path / "s" / closing["docs"]["path"]).num_rows == 0


@pytest.mark.parametrize(("mode", "context_length"), [("packing", 7), ("document", 6)])
def test_no_closing_part_when_the_last_window_is_already_closed(tmp_path, mode, context_length):
    # packing: the 5 content tokens fill budget 5 exactly; document: windows close per doc.
    corpus = jsonl_corpus(write_jsonl_corpus(tmp_path / "c.jsonl", ["hello world", "bye"]), 15)
    result = plan_into(tmp_path / "s", corpus, config(mode, context_length=context_length))
    assert all(r["shard"] is not None for r in part_records(tmp_path / "s"))
    assert len(result.parts) == len(corpus.shards())
    expected = reference(corpus, config(mode, context_length=context_length))
    assert stored_tokens(tmp_path / "s").equals(token_table(expected))


# --- what is read, and resuming ----------------------------------------------------------


def test_max_tokens_stops_reading_shards_at_the_part_that_reaches_it(
    tmp_path, corpus_path, monkeypatch
):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    reads = ShardReads(monkeypatch)
    result = plan_into(tmp_path, corpus, config(max_tokens=300))
    assert reads.shards == list(range(result.stats.num_shards))
    assert result.stats.num_shards < len(corpus.shards()) // 2
    last = part_records(tmp_path)[-1]
    assert last["row_stop"] == 300 and last["rows_cut"] > 0
    assert result.stats.num_documents == stored_docs(tmp_path).num_rows == last["doc_stop"]


@pytest.mark.parametrize("crash_in", ["_commit_files", "_write_record"])  # before / after files
def test_a_planning_that_crashed_resumes_without_retokenizing_committed_parts(
    tmp_path, corpus_path, monkeypatch, crash_in
):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    clean = create_store(tmp_path / "clean", corpus, config())
    crash_at = 5
    real = getattr(parts_module, crash_in)

    def crashing(writer, at, *args):
        part = at if isinstance(at, int) else at.part
        if part == crash_at:
            raise RuntimeError(f"killed while publishing part {part}")
        return real(writer, at, *args)

    monkeypatch.setattr(parts_module, crash_in, crashing)
    with pytest.raises(RuntimeError, match="killed while publishing part 5"):
        create_store(tmp_path / "s", corpus, config())
    assert len(part_records(tmp_path / "s")) == crash_at
    assert not (tmp_path / "s" / "store.json").exists()

    monkeypatch.undo()
    reads = ShardReads(monkeypatch)
    resumed = create_store(tmp_path / "s", corpus, config())
    assert reads.shards == list(range(crash_at, len(corpus.shards())))
    assert resumed.store_json["plan_fingerprint"] == clean.store_json["plan_fingerprint"]
    for folder in ("tokens", "docs", "plan"):
        files = {k: v for k, v in data_files(tmp_path / "s").items() if k.startswith(folder)}
        assert files == {
            k: v for k, v in data_files(tmp_path / "clean").items() if k.startswith(folder)
        }


@pytest.mark.parametrize("mode", ["packing", "document"])
def test_laying_out_a_shard_in_small_chunks_writes_the_same_files(
    tmp_path, corpus_path, monkeypatch, mode
):
    corpus = jsonl_corpus(corpus_path, 10**9)  # one shard, so chunks do all the cutting
    whole = create_store(tmp_path / "whole", corpus, config(mode=mode))
    monkeypatch.setattr(parts_module, "LAYOUT_CHUNK_TOKENS", 50)
    chunked = create_store(tmp_path / "chunked", corpus, config(mode=mode))
    assert chunked.store_json["plan_fingerprint"] == whole.store_json["plan_fingerprint"]
    for folder in ("tokens", "docs", "plan"):
        files = {k: v for k, v in data_files(tmp_path / "whole").items() if k.startswith(folder)}
        assert files == {
            k: v for k, v in data_files(tmp_path / "chunked").items() if k.startswith(folder)
        }


def test_a_rerun_with_another_context_length_during_planning_is_refused_untouched(
    tmp_path, corpus_path, monkeypatch
):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    real = parts_module._commit_files

    def crash_at_part_3(writer, at, *args):
        if at.part == 3:
            raise RuntimeError("killed")
        return real(writer, at, *args)

    monkeypatch.setattr(parts_module, "_commit_files", crash_at_part_3)
    with pytest.raises(RuntimeError, match="killed"):
        create_store(tmp_path / "s", corpus, config())
    monkeypatch.undo()
    before = data_files(tmp_path / "s")
    reads = ShardReads(monkeypatch)
    with pytest.raises(
        StoreMismatchError, match="context_length: store has 48, this run has 64"
    ) as info:
        create_store(tmp_path / "s", corpus, config(context_length=64))
    assert list(info.value.differences) == ["context_length"]
    assert reads.shards == []
    assert data_files(tmp_path / "s") == before


def test_the_planners_cursor_keeps_one_small_record_per_part(tmp_path, corpus_path):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    result = plan_into(tmp_path, corpus, config())
    cursor, _, todo = start_plan(tmp_path, corpus, minilm_tokenizer(), config(), fsync=False)
    assert todo == [] and cursor.finished and cursor.row_start == result.num_rows
    num_parts = len(list((tmp_path / "plan").glob("part-*.json")))
    assert len(cursor.records) == num_parts == len(result.parts) > 20
    for record in cursor.records:
        assert len(record) <= 12
        for value in record.values():
            assert value is None or isinstance(value, int | str | dict)
            if isinstance(value, dict):  # the corpus shard: index, path, start, stop
                assert len(value) <= 4 and not any(isinstance(v, list) for v in value.values())


# --- files, reading and verifying --------------------------------------------------------


def test_part_records_chain_their_offsets_and_cover_every_document(tmp_path, corpus_path):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    result = plan_into(tmp_path, corpus, config())
    records = part_records(tmp_path)
    assert [r["part"] for r in records] == list(range(len(records)))
    for before, after in zip(records, records[1:], strict=False):
        assert after["row_start"] == before["row_stop"]
        assert after["doc_start"] == before["doc_stop"]
        assert after["content_start"] == before["content_stop"]
    assert records[-1]["row_stop"] == result.num_rows
    assert records[-1]["doc_stop"] == NUM_TOPICS


def test_token_parts_have_the_documented_schema_and_token_strings(tmp_path, corpus_path):
    plan_into(tmp_path, jsonl_corpus(corpus_path, SHARD_BYTES), config())
    table = pq.read_table(tmp_path / "tokens" / "part-00000.parquet")
    assert table.schema.names == [
        "row", "doc_id", "window", "position", "token_id", "is_special", "token",
    ]  # fmt: skip
    assert table.schema.equals(TOKEN_SCHEMA)
    ids = table.column("token_id").to_pylist()
    assert table.column("token").to_pylist() == minilm_tokenizer().convert_ids_to_tokens(ids)


def test_token_part_row_groups_start_at_global_multiples_of_group_rows(
    tmp_path, corpus_path, monkeypatch
):
    monkeypatch.setattr(part_files_module, "TARGET_GROUP_ROWS", 1)  # a row group per unit
    plan_into(tmp_path, jsonl_corpus(corpus_path, SHARD_BYTES), config(rows_per_unit=100))
    num_groups = 0
    for record in part_records(tmp_path):
        metadata = pq.ParquetFile(tmp_path / record["tokens"]["path"]).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        starts = record["row_start"] + np.cumsum([0, *sizes[:-1]])
        assert all(start % 100 == 0 for start in starts[1:])
        assert all(size <= 100 for size in sizes)
        num_groups += len(sizes)
    assert num_groups > len(part_records(tmp_path))


@pytest.fixture
def grouped_plan(tmp_path, corpus_path, monkeypatch):
    """A plan of many parts with row groups of 100 rows; (PlanIndex, in-memory plan)."""
    monkeypatch.setattr(part_files_module, "TARGET_GROUP_ROWS", 1)
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    result = plan_into(tmp_path, corpus, config(rows_per_unit=100))
    index = PlanIndex(tmp_path, result.parts, result.num_rows, 100, result.part_name_width)
    return index, reference(corpus, config(rows_per_unit=100)), result.parts


def test_read_rows_returns_exactly_the_rows_asked_across_parts_and_row_groups(grouped_plan):
    index, expected, parts = grouped_plan
    boundary = next(p["row_stop"] for p in parts if p["row_stop"] % 100 not in (0, 99, 1))
    ranges = [
        (0, index.num_rows),
        (99, 101),  # two row groups
        (boundary - 1, boundary + 1),  # two parts
        (boundary - 150, boundary + 250),  # parts and groups
        (parts[1]["row_start"], parts[4]["row_stop"]),
        (index.num_rows - 1, index.num_rows),
        (boundary, boundary),
    ]
    for start, stop in ranges:
        assert index.read_rows(start, stop).equals(token_table(expected, start, stop)), (
            start,
            stop,
        )


def test_read_rows_returns_only_the_columns_asked(grouped_plan):
    index, expected, _ = grouped_plan
    got = index.read_rows(150, 1234, ["window", "token"])
    assert got.equals(token_table(expected, 150, 1234).select(["window", "token"]))


def test_read_rows_outside_the_store_is_a_value_error(grouped_plan):
    index, _, _ = grouped_plan
    with pytest.raises(ValueError, match="rows must satisfy"):
        index.read_rows(0, index.num_rows + 1)


@pytest.fixture
def finished_store(tmp_path, corpus_path):
    corpus = jsonl_corpus(corpus_path, SHARD_BYTES)
    writer = create_store(tmp_path / "s", corpus, config())
    expected = reference(corpus, config())
    for unit in range(writer.num_units):
        writer.write_unit(unit, unit_activations(expected, unit, HOOKS, "float32"))
    writer.finalize()
    assert ActivationStore.open(tmp_path / "s").verify()["num_committed"] == writer.num_units
    return tmp_path / "s"


def test_verify_detects_a_corrupted_docs_part(finished_store):
    path = finished_store / "docs" / "part-00003.parquet"
    pq.write_table(pq.read_table(path).slice(1), path)
    with pytest.raises(
        StoreVerificationError, match="part 3: docs file docs/part-00003.parquet does not match"
    ):
        ActivationStore.open(finished_store).verify()


def test_verify_detects_a_missing_plan_record(finished_store):
    (finished_store / "plan" / "part-00002.json").unlink()
    with pytest.raises(StoreVerificationError, match="part 2: plan record is missing"):
        ActivationStore.open(finished_store).verify()
