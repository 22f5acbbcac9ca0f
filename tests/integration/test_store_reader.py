"""Reading stores: ActivationStore, verify(), plain pandas/zarr/xarray, and jobs.inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr

from jobs.inspect import main as inspect_main
from pipeline.store import ActivationStore, NotAStoreError, StoreVerificationError
from tests.store_helpers import HOOKS, expected_float32, small_plan, token_table, write_store

REPO = Path(__file__).resolve().parents[2]
HOOK = "encoder.layer.5"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s"
    write_store(path, small_plan())
    return path


@pytest.fixture(scope="module")
def bf16_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "bf16"
    write_store(path, small_plan(), dtype="bfloat16")
    return path


@pytest.fixture
def store_copy(tmp_path):
    """A fresh store each test may damage."""
    path = tmp_path / "s"
    write_store(path, small_plan(num_docs=2, rows_per_unit=200))
    return path


def test_open_exposes_hooks_rows_widths_and_meta(store_path):
    store = ActivationStore.open(store_path)
    assert store.hooks == list(HOOKS)
    assert store.num_rows == small_plan().num_rows
    assert store.d(HOOK) == 8
    assert store.meta["fingerprint"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(store.meta["plan_fingerprint"]) == 64


def test_read_accepts_slices_and_unsorted_index_arrays(store_path):
    store = ActivationStore.open(store_path)
    everything = expected_float32(0, store.num_rows, 8, "float32", 1)
    np.testing.assert_array_equal(store.read(HOOK, slice(490, 1010)), everything[490:1010])
    rows = np.array([1500, 3, 3, 999, 0])
    np.testing.assert_array_equal(store.read(HOOK, rows), everything[rows])
    assert store.read(HOOK, []).shape == (0, 8)
    with pytest.raises(IndexError):
        store.read(HOOK, [store.num_rows])


def test_bfloat16_reads_back_as_float32(bf16_path):
    store = ActivationStore.open(bf16_path)
    got = store.read(HOOK, slice(0, 100))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected_float32(0, 100, 8, "bfloat16", 1))
    assert store.activations(HOOK).dtype == np.uint16


def test_iter_batches_covers_all_rows_in_order(store_path):
    store = ActivationStore.open(store_path)
    batches = list(store.iter_batches(HOOK, 700))
    assert [start for start, _ in batches] == list(range(0, store.num_rows, 700))
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), store.read(HOOK))


def test_tokens_equal_the_plan_token_table(store_path):
    store = ActivationStore.open(store_path)
    plan = small_plan()
    assert store.tokens().equals(token_table(plan))
    assert store.tokens(slice(495, 505)).equals(token_table(plan, 495, 505))
    assert store.tokens([1200, 7]).column("row").to_pylist() == [1200, 7]
    last = plan.num_rows - 1  # the closing part's [SEP]
    assert store.tokens([last, 0]).equals(
        pa.concat_tables([token_table(plan, last, last + 1), token_table(plan, 0, 1)])
    )


def test_docs_table_lists_every_document(store_path):
    docs = ActivationStore.open(store_path).docs()
    assert docs.column("doc_id").to_pylist() == [0, 1, 2, 3]
    assert docs.schema.names == ["doc_id", "source", "text", "num_tokens"]
    assert docs.equals(small_plan().docs)


def test_to_pandas_joins_tokens_with_one_list_column_per_hook(store_path):
    store = ActivationStore.open(store_path)
    df = store.to_pandas(rows=slice(10, 20))
    assert list(df.columns[:7]) == [
        "row",
        "doc_id",
        "window",
        "position",
        "token_id",
        "is_special",
        "token",
    ]
    assert isinstance(df[HOOK].dtype, pd.ArrowDtype)
    np.testing.assert_array_equal(np.stack(df[HOOK].to_numpy()), store.read(HOOK, slice(10, 20)))
    assert df["row"].tolist() == list(range(10, 20))


def test_verify_passes_on_a_complete_store(store_path):
    summary = ActivationStore.open(store_path).verify()
    assert summary["num_committed"] == summary["num_units"] == small_plan().num_units
    assert summary["bytes_checked"] > 0


def test_verify_detects_a_flipped_byte_in_the_activations(store_copy):
    shard = store_copy / "activations.zarr" / HOOK / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(
        StoreVerificationError, match=r"unit 1, hook 'encoder.layer.5': data does not match"
    ):
        ActivationStore.open(store_copy).verify()


def test_verify_detects_a_damaged_shard_index(store_copy):
    shard = store_copy / "activations.zarr" / HOOK / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-6] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreVerificationError, match=r"unit 0, hook 'encoder.layer.5'"):
        ActivationStore.open(store_copy).verify()


def test_verify_reports_missing_units_token_parts_and_success(store_copy):
    (store_copy / "units" / "unit-00001.json").unlink()
    (store_copy / "tokens" / "part-00000.parquet").unlink()
    (store_copy / "_SUCCESS").unlink()
    with pytest.raises(StoreVerificationError) as info:
        ActivationStore.open(store_copy).verify()
    problems = "\n".join(info.value.problems)
    assert "1 units not committed: 1" in problems
    assert "part 0: tokens file tokens/part-00000.parquet is missing" in problems
    assert "_SUCCESS is missing" in problems


def test_verify_detects_a_changed_token_part(store_copy):
    path = store_copy / "tokens" / "part-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)
    with pytest.raises(
        StoreVerificationError, match="part 0: tokens file tokens/part-00000.parquet does not match"
    ):
        ActivationStore.open(store_copy).verify()


def test_verify_detects_parts_that_do_not_tile_the_rows(store_copy):
    meta = json.loads((store_copy / "store.json").read_text())
    meta["parts"] = meta["parts"][1:]
    (store_copy / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreVerificationError, match=r"part 1: starts at row \d+, expected 0"):
        ActivationStore.open(store_copy).verify()


def test_opening_something_that_is_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(NotAStoreError, match="does not exist"):
        ActivationStore.open(tmp_path / "nope")
    with pytest.raises(NotAStoreError, match="has no store.json"):
        ActivationStore.open(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotAStoreError, match="is a file"):
        ActivationStore.open(tmp_path / "f")


def test_opening_a_format_1_store_is_refused_with_what_to_do(store_copy):
    meta = json.loads((store_copy / "store.json").read_text())
    (store_copy / "store.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(NotAStoreError, match="is a format 1 store") as info:
        ActivationStore.open(store_copy)
    assert "capture it again" in str(info.value)


def test_opening_a_store_still_being_planned_says_so(store_copy):
    (store_copy / "store.json").unlink()
    with pytest.raises(NotAStoreError, match="still being planned"):
        ActivationStore.open(store_copy)


def test_pandas_reads_the_token_tables_without_the_pipeline(store_path):
    temp = store_path / "tokens" / ".part-00001.parquet.1-x.tmp"
    temp.write_bytes(b"in progress")
    try:
        df = pd.read_parquet(store_path / "tokens")
    finally:
        temp.unlink()
    assert len(df) == small_plan().num_rows
    assert df["row"].tolist() == list(range(len(df)))
    assert df["token"].iloc[0] == "[CLS]"


def test_zarr_reads_the_arrays_without_the_pipeline(store_path):
    group = zarr.open_group(store_path / "activations.zarr", mode="r")
    assert sorted(group.array_keys()) == sorted(HOOKS)
    array = group[HOOK]
    assert array.shape == (small_plan().num_rows, 8)
    np.testing.assert_array_equal(array[100:200], expected_float32(100, 200, 8, "float32", 1))


def test_xarray_opens_the_consolidated_store(store_path, bf16_path):
    ds = xr.open_zarr(store_path / "activations.zarr", consolidated=True)
    assert dict(ds.sizes) == {"row": small_plan().num_rows, "feature": 8}
    np.testing.assert_array_equal(
        ds[HOOK].isel(row=slice(0, 50)).values, expected_float32(0, 50, 8, "float32", 1)
    )
    bits = xr.open_zarr(bf16_path / "activations.zarr", consolidated=True)[HOOK]
    assert bits.dtype == np.uint16 and bits.attrs["logical_dtype"] == "bfloat16"


def test_inspect_prints_a_summary_and_exits_zero(store_path, capsys):
    assert inspect_main([str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "model_id: sentence-transformers/all-MiniLM-L6-v2" in out
    assert "encoder.layer.5: d=8 dtype=float32" in out
    assert f"units: {small_plan().num_units}/{small_plan().num_units} committed" in out
    assert "verify: OK" in out and "[CLS]" in out
    assert "pandas.read_parquet" in out and "xarray.open_zarr" in out


def test_inspect_exits_one_for_an_unfinished_store(tmp_path, capsys):
    write_store(tmp_path / "s", small_plan(), units=[0], finalize=False)
    assert inspect_main([str(tmp_path / "s"), "--quick"]) == 1
    assert "verify: FAILED" in capsys.readouterr().out


def test_inspect_runs_as_a_module(store_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "jobs.inspect", str(store_path), "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "verify: OK, data not read" in result.stdout


def test_inspect_says_when_a_path_is_not_a_store(tmp_path, capsys):
    assert inspect_main([str(tmp_path)]) == 2
    assert "not an activation store" in capsys.readouterr().err
