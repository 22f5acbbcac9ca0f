"""Corpus readers: every kind, stable ids, and clear errors for bad input."""

from __future__ import annotations

import json
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.store.corpus import Corpus, CorpusConfig, Document, decode_utf8


def read(**kwargs) -> list[Document]:
    return list(Corpus(CorpusConfig(**kwargs)))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_config_rejects_unknown_kind_naming_the_field():
    with pytest.raises(ValueError, match="kind must be one of"):
        CorpusConfig(kind="csv", path="x")


def test_config_requires_path_except_for_pydoc():
    with pytest.raises(ValueError, match="path is required"):
        CorpusConfig(kind="jsonl")
    with pytest.raises(ValueError, match="path must be None"):
        CorpusConfig(kind="pydoc", path="x")


def test_config_rejects_one_per_line_for_non_text_kinds():
    with pytest.raises(ValueError, match="one_per_line"):
        CorpusConfig(kind="jsonl", path="x", one_per_line=True)


def test_pydoc_yields_79_topics_sorted_by_name():
    docs = read(kind="pydoc")
    assert len(docs) == 79
    assert [d.source for d in docs] == sorted(d.source for d in docs)
    assert [d.doc_id for d in docs] == list(range(79))
    assert all(d.text for d in docs)


def test_jsonl_reads_files_in_sorted_order_with_ids_across_files(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"text": "third"}])
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}, {"text": "second"}])
    docs = read(kind="jsonl", path=str(tmp_path / "*.jsonl"))
    assert [(d.doc_id, d.text) for d in docs] == [(0, "first"), (1, "second"), (2, "third")]
    assert docs[1].source.endswith("a.jsonl:2")


def test_jsonl_custom_text_field(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"body": "hello", "text": "ignored"}])
    assert read(kind="jsonl", path=str(tmp_path / "a.jsonl"), text_field="body")[0].text == "hello"


def test_jsonl_bad_line_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: line is not valid JSON"):
        read(kind="jsonl", path=str(path))


def test_jsonl_missing_field_error_names_file_line_and_keys(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "ok"}, {"body": "no text here"}])
    with pytest.raises(
        ValueError, match=r"a\.jsonl:2: record has no field 'text' \(has \['body'\]\)"
    ):
        read(kind="jsonl", path=str(path))


def test_jsonl_blank_lines_are_not_records(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n')
    assert [(d.doc_id, d.text) for d in read(kind="jsonl", path=str(path))] == [(0, "a"), (1, "b")]


def test_empty_documents_keep_their_ids(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "a"}, {"text": "  \n"}, {"text": None}, {"text": "d"}])
    docs = read(kind="jsonl", path=str(path))
    assert [(d.doc_id, d.text) for d in docs] == [(0, "a"), (1, "  \n"), (2, ""), (3, "d")]


def test_non_string_text_is_an_error(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": 5}])
    with pytest.raises(ValueError, match=r"a\.jsonl:1: field 'text' must be a string, got int"):
        read(kind="jsonl", path=str(path))


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="matched no files"):
        read(kind="jsonl", path=str(tmp_path / "*.jsonl"))


def test_parquet_reads_configured_column(tmp_path):
    pq.write_table(pa.table({"content": ["x", None, "z"]}), tmp_path / "a.parquet")
    docs = read(kind="parquet", path=str(tmp_path / "*.parquet"), text_field="content")
    assert [(d.doc_id, d.text) for d in docs] == [(0, "x"), (1, ""), (2, "z")]
    assert docs[2].source.endswith("a.parquet#2")


def test_parquet_missing_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['content'\]\)"):
        read(kind="parquet", path=str(tmp_path / "a.parquet"))


def test_text_one_document_per_file(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay\nsecond line")
    docs = read(kind="text", path=str(tmp_path / "*.txt"))
    assert [d.text for d in docs] == ["ay\nsecond line", "bee"]


def test_text_one_per_line_counts_blank_lines_as_documents(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    docs = read(kind="text", path=str(tmp_path / "a.txt"), one_per_line=True)
    assert [(d.doc_id, d.text) for d in docs] == [(0, "one"), (1, ""), (2, "two")]
    assert docs[2].source.endswith("a.txt:3")


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xc3\xa9 \xff\xfe ok \xef\xbf\xbd")
    (doc,) = read(kind="text", path=str(tmp_path / "a.txt"))
    assert doc.text == "café \ufffd\ufffd ok \ufffd"
    assert doc.num_replaced_chars == 2  # the literal U+FFFD was valid UTF-8


def test_decode_utf8_counts_truncated_sequences():
    assert decode_utf8(b"\xe2\x82") == ("\ufffd", 1)


def test_max_documents_limits_reading():
    assert len(read(kind="pydoc", max_documents=3)) == 3


def test_hf_disk_without_datasets_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        read(kind="hf_disk", path=str(tmp_path))


class _FakeDataset:
    def __init__(self, texts):
        self.column_names = ["text", "label"]
        self._texts = texts

    def iter(self, batch_size):
        for lo in range(0, len(self._texts), batch_size):
            yield {"text": self._texts[lo : lo + batch_size]}


def test_hf_disk_reads_the_split_of_a_dataset_dict(tmp_path, monkeypatch):
    loaded = {"train": _FakeDataset(["a", "b"]), "test": _FakeDataset(["c"])}
    fake = types.SimpleNamespace(load_from_disk=lambda path: loaded)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    docs = read(kind="hf_disk", path=str(tmp_path), split="train")
    assert [(d.doc_id, d.text) for d in docs] == [(0, "a"), (1, "b")]
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        read(kind="hf_disk", path=str(tmp_path))


def test_fingerprint_changes_with_content_not_with_location(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "a.jsonl", [{"text": "same"}])
    one = Corpus(CorpusConfig(kind="jsonl", path=str(tmp_path / "one" / "*.jsonl")))
    two = Corpus(CorpusConfig(kind="jsonl", path=str(tmp_path / "two" / "*.jsonl")))
    assert one.fingerprint() == two.fingerprint()
    write_jsonl(tmp_path / "two" / "a.jsonl", [{"text": "different"}])
    assert one.fingerprint() != two.fingerprint()


def test_fingerprint_depends_on_config(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "body": "y"}])
    path = str(tmp_path / "a.jsonl")
    text = Corpus(CorpusConfig(kind="jsonl", path=path)).fingerprint()
    body = Corpus(CorpusConfig(kind="jsonl", path=path, text_field="body")).fingerprint()
    assert text != body
