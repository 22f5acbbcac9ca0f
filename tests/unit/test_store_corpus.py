"""Corpus readers: every kind, shards planned from metadata, stable ids, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.store.corpus import Corpus, CorpusConfig, CorpusShard, Document, decode_utf8

SHARD_SIZES = (1, 7, 100, 10**9)

# Every hard case of a line-oriented file: blank lines (also CRLF and whitespace-only),
# CRLF endings, multi-byte UTF-8 that byte boundaries cut through, an invalid byte, a null
# text, a long line spanning many small shards, and no newline at the end.
TRICKY_JSONL = (
    b'{"text": "first"}\n'
    b"\n"
    b'{"text": "crlf line"}\r\n'
    b"   \r\n"
    b'{"text": "caf\xc3\xa9 \xe2\x82\xac, long enough to span several small byte ranges"}\n'
    b'{"text": "bad \xff byte"}\n'
    b'{"text": null}\n'
    b'{"text": "no trailing newline"}'
)
TRICKY_TEXT = b"one\n\ntwo\r\n\r\ncaf\xc3\xa9 \xe2\x82\xac a longer line\nbad \xff\n  \nlast"


def read(**kwargs) -> list[Document]:
    return list(Corpus(CorpusConfig(**kwargs)))


def read_by_shards(corpus: Corpus) -> list[tuple[str, str, int]]:
    """Every shard read alone (through a fresh Corpus), concatenated in shard order."""
    out = []
    for shard in corpus.shards():
        docs = list(Corpus(corpus.config).read_shard(shard))
        assert [d.doc_id for d in docs] == list(range(len(docs)))
        out += [(d.source, d.text, d.num_replaced_chars) for d in docs]
    return out


def assert_shards_and_iter_match(config: CorpusConfig, expected: list[tuple[str, str, int]]):
    corpus = Corpus(config)
    assert read_by_shards(corpus) == expected
    docs = list(corpus)
    assert [d.doc_id for d in docs] == list(range(len(expected)))
    assert [(d.source, d.text, d.num_replaced_chars) for d in docs] == expected


def lines_of(raw: bytes) -> list[tuple[int, bytes]]:
    """Reference splitter: (byte offset, line without b"\\n" or b"\\r\\n") of every line."""
    out, offset = [], 0
    pieces = raw.split(b"\n")
    for i, piece in enumerate(pieces):
        if i == len(pieces) - 1 and not piece:
            break
        out.append((offset, piece.removesuffix(b"\r")))
        offset += len(piece) + 1
    return out


def expected_jsonl(path, raw: bytes, compressed: bool = False) -> list[tuple[str, str, int]]:
    """Reference reader: `path@offset` sources, or `path:line` for a compressed file."""
    out = []
    for lineno, (offset, line) in enumerate(lines_of(raw), start=1):
        if line.strip():
            text, replaced = decode_utf8(line)
            source = f"{path}:{lineno}" if compressed else f"{path}@{offset}"
            out.append((source, json.loads(text)["text"] or "", replaced))
    return out


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_compressed(path, raw: bytes, codec: str):
    with pa.CompressedOutputStream(str(path), codec) as out:
        out.write(raw)


# --- config -----------------------------------------------------------------------------


def test_config_rejects_unknown_kind_naming_the_field():
    with pytest.raises(ValueError, match="kind must be one of"):
        CorpusConfig(kind="csv", path="x")


def test_config_requires_path_except_for_pydoc():
    with pytest.raises(ValueError, match="path is required"):
        CorpusConfig(kind="jsonl")
    with pytest.raises(ValueError, match="path must be null"):
        CorpusConfig(kind="pydoc", path="x")


def test_config_rejects_one_per_line_for_non_text_kinds():
    with pytest.raises(ValueError, match="one_per_line"):
        CorpusConfig(kind="jsonl", path="x", one_per_line=True)


@pytest.mark.parametrize("bad", [0, -5, "16MiB", 1.5])
def test_config_rejects_shard_bytes_below_one_naming_the_field(bad):
    with pytest.raises(ValueError, match="shard_bytes must be"):
        CorpusConfig(kind="jsonl", path="x", shard_bytes=bad)


# --- shards -----------------------------------------------------------------------------


def test_shard_round_trips_through_json_and_pickle():
    shard = CorpusShard(index=3, path="/data/a.jsonl", start=10, stop=20)
    assert CorpusShard.from_dict(json.loads(json.dumps(shard.to_dict()))) == shard
    assert pickle.loads(pickle.dumps(shard)) == shard


def test_shards_are_numbered_in_corpus_order(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x" * 50}] * 4)
    write_jsonl(tmp_path / "b.jsonl", [{"text": "y"}])
    shards = Corpus(CorpusConfig(kind="jsonl", path=str(tmp_path / "*"), shard_bytes=64)).shards()
    assert [s.index for s in shards] == list(range(len(shards)))
    assert [(os.path.basename(s.path), s.start) for s in shards] == [
        ("a.jsonl", 0),
        ("a.jsonl", 64),
        ("a.jsonl", 128),
        ("a.jsonl", 192),
        ("b.jsonl", 0),
    ]


def test_read_shard_ignores_max_documents_and_iter_applies_it():
    corpus = Corpus(CorpusConfig(kind="pydoc", max_documents=3))
    (shard,) = corpus.shards()
    assert len(list(corpus.read_shard(shard))) == 79
    assert [d.doc_id for d in corpus] == [0, 1, 2]


def test_iter_stops_at_max_documents_without_reading_further(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    assert [d.text for d in read(kind="jsonl", path=str(path), max_documents=1)] == ["ok"]


# --- pydoc ------------------------------------------------------------------------------


def test_pydoc_yields_79_topics_sorted_by_name():
    docs = read(kind="pydoc")
    assert len(docs) == 79
    assert [d.source for d in docs] == sorted(d.source for d in docs)
    assert [d.doc_id for d in docs] == list(range(79))
    assert all(d.text for d in docs)


def test_pydoc_is_one_shard_of_all_topics():
    assert Corpus(CorpusConfig(kind="pydoc")).shards() == [
        CorpusShard(index=0, path=None, start=0, stop=79)
    ]


# --- jsonl ------------------------------------------------------------------------------


def test_jsonl_reads_files_in_sorted_order_with_ids_across_files(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"text": "third"}])
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}, {"text": "second"}])
    docs = read(kind="jsonl", path=str(tmp_path / "*.jsonl"))
    assert [(d.doc_id, d.text) for d in docs] == [(0, "first"), (1, "second"), (2, "third")]
    assert docs[1].source == f"{tmp_path / 'a.jsonl'}@18"  # '{"text": "first"}\n' is 18 bytes


def test_jsonl_source_offset_seeks_to_the_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(TRICKY_JSONL)
    docs = read(kind="jsonl", path=str(path))
    assert len(docs) == 6
    for doc in docs:
        with open(path, "rb") as f:
            f.seek(int(doc.source.rsplit("@", 1)[1]))
            assert (json.loads(decode_utf8(f.readline())[0])["text"] or "") == doc.text


def test_jsonl_shards_hold_every_record_once_at_every_boundary_position(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(TRICKY_JSONL)
    expected = expected_jsonl(path, TRICKY_JSONL)
    assert len(expected) == 6
    for shard_bytes in range(1, len(TRICKY_JSONL) + 2):
        corpus = Corpus(CorpusConfig(kind="jsonl", path=str(path), shard_bytes=shard_bytes))
        assert read_by_shards(corpus) == expected, f"shard_bytes={shard_bytes}"


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_jsonl_shards_match_iteration_across_files(tmp_path, shard_bytes):
    contents = {
        "a.jsonl": TRICKY_JSONL,
        "b.jsonl": b"",
        "c.jsonl": b"\n\r\n\n",
        "d.jsonl": b'{"text": "after blanks"}\r\n{"text": "\xe2\x82\xac"}\n',
    }
    expected = []
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
        expected += expected_jsonl(tmp_path / name, raw)
    config = CorpusConfig(kind="jsonl", path=str(tmp_path / "*.jsonl"), shard_bytes=shard_bytes)
    assert_shards_and_iter_match(config, expected)


def test_jsonl_shards_do_not_read_text(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "abcdefg"}] * 10)  # 20-byte lines
    config = CorpusConfig(kind="jsonl", path=str(path), shard_bytes=40)
    shards = Corpus(config).shards()
    raw = path.read_bytes()
    path.write_bytes(raw[:40] + b"x" * (len(raw) - 40))  # same size, invalid after shard 0
    assert Corpus(config).shards() == shards
    assert [d.text for d in Corpus(config).read_shard(shards[0])] == ["abcdefg"] * 2


def test_jsonl_custom_text_field(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"body": "hello", "text": "ignored"}])
    assert read(kind="jsonl", path=str(tmp_path / "a.jsonl"), text_field="body")[0].text == "hello"


def test_jsonl_bad_line_error_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl@15: line is not valid JSON"):
        read(kind="jsonl", path=str(path))


def test_jsonl_missing_field_error_names_file_offset_and_keys(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "ok"}, {"body": "no text here"}])
    with pytest.raises(
        ValueError, match=r"a\.jsonl@15: record has no field 'text' \(has \['body'\]\)"
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
    with pytest.raises(ValueError, match=r"a\.jsonl@0: field 'text' must be a string, got int"):
        read(kind="jsonl", path=str(path))


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="matched no files"):
        read(kind="jsonl", path=str(tmp_path / "*.jsonl"))


# --- compressed jsonl -------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "codec"), [(".jsonl.gz", "gzip"), (".json.zst", "zstd")])
def test_compressed_jsonl_is_one_shard_with_line_numbers(tmp_path, suffix, codec):
    path = tmp_path / f"a{suffix}"
    write_compressed(path, TRICKY_JSONL, codec)
    expected = expected_jsonl(path, TRICKY_JSONL, compressed=True)
    assert [source.rsplit(":", 1)[1] for source, _, _ in expected] == ["1", "3", "5", "6", "7", "8"]
    for shard_bytes in SHARD_SIZES:
        config = CorpusConfig(kind="jsonl", path=str(path), shard_bytes=shard_bytes)
        assert Corpus(config).shards() == [
            CorpusShard(index=0, path=str(path), start=0, stop=path.stat().st_size)
        ]
        assert_shards_and_iter_match(config, expected)


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_glob_mixes_compressed_and_plain_jsonl(tmp_path, shard_bytes):
    write_compressed(tmp_path / "a.jsonl.gz", b'{"text": "gz"}\n\n{"text": "gz2"}\n', "gzip")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "plain"}\n')
    write_compressed(tmp_path / "c.jsonl.zst", b'{"text": "zst"}', "zstd")
    expected = [
        (f"{tmp_path / 'a.jsonl.gz'}:1", "gz", 0),
        (f"{tmp_path / 'a.jsonl.gz'}:3", "gz2", 0),
        (f"{tmp_path / 'b.jsonl'}@0", "plain", 0),
        (f"{tmp_path / 'c.jsonl.zst'}:1", "zst", 0),
    ]
    config = CorpusConfig(kind="jsonl", path=str(tmp_path / "*"), shard_bytes=shard_bytes)
    assert_shards_and_iter_match(config, expected)


def test_compressed_jsonl_bad_line_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    write_compressed(path, b'{"text": "ok"}\n{not json\n', "gzip")
    with pytest.raises(ValueError, match=r"bad\.jsonl\.gz:2: line is not valid JSON"):
        read(kind="jsonl", path=str(path))


def test_compressed_jsonl_streams_many_lines(tmp_path):
    path = tmp_path / "big.jsonl.zst"
    raw = b"".join(b'{"text": "document %d"}\n' % i for i in range(50_000))
    write_compressed(path, raw, "zstd")
    docs = read(kind="jsonl", path=str(path))
    assert len(docs) == 50_000
    assert (docs[-1].source, docs[-1].text) == (f"{path}:50000", "document 49999")


# --- parquet ----------------------------------------------------------------------------


@pytest.fixture
def parquet_folder(tmp_path):
    """Many files in a tree, several row groups each, an empty file and files to skip."""
    root = tmp_path / "fineweb"
    (root / "b").mkdir(parents=True)
    (root / "_tmp").mkdir()
    a_texts = [f"a{i}" if i != 3 else None for i in range(7)]
    b_texts = [f"b{i}" * (i + 1) for i in range(10)]
    pq.write_table(
        pa.table({"id": list(range(7)), "text": a_texts}), root / "a.parquet", row_group_size=2
    )
    pq.write_table(pa.table({"text": b_texts}), root / "b" / "part-1.parquet", row_group_size=3)
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), root / "empty.parquet")
    pq.write_table(pa.table({"text": ["skipped"]}), root / "_tmp" / "x.parquet")
    pq.write_table(pa.table({"text": ["skipped"]}), root / "_partial.parquet")
    (root / "README.md").write_text("not data")
    expected = [(f"{root / 'a.parquet'}#{i}", t or "", 0) for i, t in enumerate(a_texts)]
    expected += [(f"{root / 'b' / 'part-1.parquet'}#{i}", t, 0) for i, t in enumerate(b_texts)]
    return root, expected


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_parquet_folder_shards_match_iteration(parquet_folder, shard_bytes):
    root, expected = parquet_folder
    assert_shards_and_iter_match(
        CorpusConfig(kind="parquet", path=str(root), shard_bytes=shard_bytes), expected
    )


def test_parquet_shards_are_runs_of_row_groups(parquet_folder):
    root, _ = parquet_folder

    def spans(shard_bytes):
        shards = Corpus(CorpusConfig(kind="parquet", path=str(root), shard_bytes=shard_bytes))
        return [(os.path.basename(s.path), s.start, s.stop) for s in shards.shards()]

    assert spans(1) == [("a.parquet", lo, min(lo + 2, 7)) for lo in range(0, 7, 2)] + [
        ("part-1.parquet", lo, min(lo + 3, 10)) for lo in range(0, 10, 3)
    ]
    assert spans(10**9) == [("a.parquet", 0, 7), ("part-1.parquet", 0, 10)]


def test_parquet_reads_configured_column(tmp_path):
    pq.write_table(pa.table({"content": ["x", None, "z"]}), tmp_path / "a.parquet")
    docs = read(kind="parquet", path=str(tmp_path / "*.parquet"), text_field="content")
    assert [(d.doc_id, d.text) for d in docs] == [(0, "x"), (1, ""), (2, "z")]
    assert docs[2].source.endswith("a.parquet#2")


def test_parquet_missing_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['content'\]\)"):
        Corpus(CorpusConfig(kind="parquet", path=str(tmp_path / "a.parquet"))).shards()


# --- text -------------------------------------------------------------------------------


def test_text_one_document_per_file(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay\nsecond line")
    docs = read(kind="text", path=str(tmp_path / "*.txt"))
    assert [d.text for d in docs] == ["ay\nsecond line", "bee"]


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_text_file_shards_match_iteration(tmp_path, shard_bytes):
    contents = {"a.txt": b"x" * 60, "b.txt": b"", "c.txt": b"caf\xc3\xa9 \xff", "d.txt": b"d\n"}
    expected = []
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
        expected.append((str(tmp_path / name), *decode_utf8(raw)))
    config = CorpusConfig(kind="text", path=str(tmp_path / "*.txt"), shard_bytes=shard_bytes)
    assert_shards_and_iter_match(config, expected)


def test_text_file_shards_are_runs_of_whole_files(tmp_path):
    for name, size in [("a", 60), ("b", 0), ("c", 30), ("d", 30), ("e", 5)]:
        (tmp_path / f"{name}.txt").write_bytes(b"x" * size)
    corpus = Corpus(CorpusConfig(kind="text", path=str(tmp_path / "*.txt"), shard_bytes=64))
    runs = [(os.path.basename(s.path), s.start, s.stop) for s in corpus.shards()]
    assert runs == [("a.txt", 0, 2), ("c.txt", 2, 4), ("e.txt", 4, 5)]


def test_text_one_per_line_counts_blank_lines_as_documents(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    docs = read(kind="text", path=str(tmp_path / "a.txt"), one_per_line=True)
    assert [(d.doc_id, d.text) for d in docs] == [(0, "one"), (1, ""), (2, "two")]
    assert docs[2].source == f"{tmp_path / 'a.txt'}@5"


def test_text_lines_hold_every_line_once_at_every_boundary_position(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(TRICKY_TEXT)
    expected = [(f"{path}@{at}", *decode_utf8(line)) for at, line in lines_of(TRICKY_TEXT)]
    assert [text for _, text, _ in expected][:4] == ["one", "", "two", ""]
    for shard_bytes in range(1, len(TRICKY_TEXT) + 2):
        config = CorpusConfig(
            kind="text", path=str(path), one_per_line=True, shard_bytes=shard_bytes
        )
        assert read_by_shards(Corpus(config)) == expected, f"shard_bytes={shard_bytes}"


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_text_line_shards_match_iteration_across_files(tmp_path, shard_bytes):
    contents = {"a.txt": TRICKY_TEXT, "b.txt": b"", "c.txt": b"\n", "d.txt": b"x\r\ny"}
    expected = []
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
        expected += [(f"{tmp_path / name}@{at}", *decode_utf8(line)) for at, line in lines_of(raw)]
    config = CorpusConfig(
        kind="text", path=str(tmp_path / "*.txt"), one_per_line=True, shard_bytes=shard_bytes
    )
    assert_shards_and_iter_match(config, expected)


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xc3\xa9 \xff\xfe ok \xef\xbf\xbd")
    (doc,) = read(kind="text", path=str(tmp_path / "a.txt"))
    assert doc.text == "café \ufffd\ufffd ok \ufffd"
    assert doc.num_replaced_chars == 2  # the literal U+FFFD was valid UTF-8


def test_decode_utf8_counts_truncated_sequences():
    assert decode_utf8(b"\xe2\x82") == ("\ufffd", 1)


def test_max_documents_limits_reading():
    assert len(read(kind="pydoc", max_documents=3)) == 3


# --- hf_disk ----------------------------------------------------------------------------

HF_TEXTS = [f"row {i}" if i % 777 else None for i in range(5000)]


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Real `datasets.save_to_disk` folders: 2 Arrow files of 1000-row record batches."""
    import datasets

    root = tmp_path_factory.mktemp("hf")
    table = datasets.Dataset.from_dict({"label": range(5000), "text": HF_TEXTS})
    table.save_to_disk(str(root / "plain"), num_shards=2)
    splits = {"train": table.select(range(3)), "test": table.select(range(3, 5))}
    datasets.DatasetDict(splits).save_to_disk(str(root / "dict"))
    datasets.DatasetDict({"train": table.select(range(2))}).save_to_disk(str(root / "one"))
    return root


@pytest.mark.parametrize("shard_bytes", SHARD_SIZES)
def test_hf_disk_shards_match_iteration(hf_folders, shard_bytes):
    path = str(hf_folders / "plain")
    expected = [(f"{path}#{i}", text or "", 0) for i, text in enumerate(HF_TEXTS)]
    assert_shards_and_iter_match(
        CorpusConfig(kind="hf_disk", path=path, shard_bytes=shard_bytes), expected
    )


def test_hf_disk_shards_are_runs_of_record_batches(hf_folders):
    path = str(hf_folders / "plain")

    def spans(shard_bytes):
        shards = Corpus(CorpusConfig(kind="hf_disk", path=path, shard_bytes=shard_bytes)).shards()
        return [(os.path.basename(s.path), s.start, s.stop) for s in shards]

    first, second = "data-00000-of-00002.arrow", "data-00001-of-00002.arrow"
    assert spans(1) == [
        (name, lo, min(lo + 1000, 2500)) for name in (first, second) for lo in (0, 1000, 2000)
    ]
    assert spans(10**9) == [(first, 0, 2500), (second, 0, 2500)]


def test_hf_disk_reads_a_late_shard_alone_with_global_row_ids(hf_folders):
    path = str(hf_folders / "plain")
    corpus = Corpus(CorpusConfig(kind="hf_disk", path=path, shard_bytes=1))
    last = corpus.shards()[-1]
    docs = list(Corpus(corpus.config).read_shard(last))
    assert (docs[0].doc_id, docs[0].source, docs[0].text) == (0, f"{path}#4500", "row 4500")


def test_hf_disk_reads_the_split_of_a_dataset_dict(hf_folders):
    path = str(hf_folders / "dict")
    docs = read(kind="hf_disk", path=path, split="test")
    assert [(d.doc_id, d.source, d.text) for d in docs] == [
        (0, f"{path}[test]#0", "row 3"),
        (1, f"{path}[test]#1", "row 4"),
    ]
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        read(kind="hf_disk", path=path)


def test_hf_disk_dataset_dict_with_one_split_needs_no_split(hf_folders):
    assert [d.text for d in read(kind="hf_disk", path=str(hf_folders / "one"))] == ["", "row 1"]


def test_hf_disk_missing_column_lists_columns(hf_folders):
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: \['label', 'text'\]\)"):
        read(kind="hf_disk", path=str(hf_folders / "plain"), text_field="body")


def test_hf_disk_selection_over_indices_says_to_flatten(hf_folders, tmp_path):
    state = json.loads((hf_folders / "plain" / "state.json").read_text())
    state["_indices_data_files"] = [{"filename": "indices.arrow"}]  # as older `datasets` wrote
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"flatten_indices\(\)\.save_to_disk"):
        Corpus(CorpusConfig(kind="hf_disk", path=str(tmp_path))).shards()


def test_hf_disk_folder_without_state_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no state.json"):
        read(kind="hf_disk", path=str(tmp_path))


def test_hf_disk_path_must_be_a_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        read(kind="hf_disk", path=str(tmp_path / "missing"))


# --- fingerprint ------------------------------------------------------------------------


def test_fingerprint_changes_with_size_not_with_location(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "a.jsonl", [{"text": "same"}])
    one = Corpus(CorpusConfig(kind="jsonl", path=str(tmp_path / "one" / "*.jsonl")))
    two = Corpus(CorpusConfig(kind="jsonl", path=str(tmp_path / "two" / "*.jsonl")))
    assert one.fingerprint() == two.fingerprint()
    write_jsonl(tmp_path / "two" / "a.jsonl", [{"text": "different"}])
    assert one.fingerprint() != two.fingerprint()


def test_fingerprint_does_not_read_contents(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "abc"}])
    corpus = Corpus(CorpusConfig(kind="jsonl", path=str(path)))
    before = corpus.fingerprint()
    write_jsonl(path, [{"text": "xyz"}])  # same size: only the planner's digests see it
    assert corpus.fingerprint() == before


def test_fingerprint_and_shards_of_a_huge_file_read_no_bytes(tmp_path, monkeypatch):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.truncate(2**36)  # 64 GiB of holes
    corpus = Corpus(CorpusConfig(kind="jsonl", path=str(path)))
    real_open = open

    def no_reads(file, *args, **kwargs):
        assert Path(file) != path, "the corpus file must not be opened"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_reads)
    corpus.fingerprint()
    assert len(corpus.shards()) == 2**36 // (4 * 2**20)


def test_fingerprint_depends_on_config(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "body": "y"}])
    path = str(tmp_path / "a.jsonl")
    text = Corpus(CorpusConfig(kind="jsonl", path=path)).fingerprint()
    body = Corpus(CorpusConfig(kind="jsonl", path=path, text_field="body")).fingerprint()
    small = Corpus(CorpusConfig(kind="jsonl", path=path, shard_bytes=1024)).fingerprint()
    assert len({text, body, small}) == 3


def test_hf_disk_fingerprint_includes_the_datasets_fingerprint(hf_folders, tmp_path):
    original = Corpus(CorpusConfig(kind="hf_disk", path=str(hf_folders / "plain")))
    copy = tmp_path / "plain"
    shutil.copytree(hf_folders / "plain", copy)
    copied = Corpus(CorpusConfig(kind="hf_disk", path=str(copy)))
    assert copied.fingerprint() == original.fingerprint()
    state_file = copy / "state.json"
    state = state_file.read_text()
    theirs = json.loads(state)["_fingerprint"]
    state_file.write_text(state.replace(theirs, theirs[::-1]))  # same size, new fingerprint
    assert copied.fingerprint() != original.fingerprint()
