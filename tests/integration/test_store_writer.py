"""StoreWriter on real disk: round trips, exactly-once commits, refusals, disk-full safety.

The planner itself (parts, resuming a planning, max_tokens) is tested in
test_store_planner.py; here planning is the first phase of `create_or_open`.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import pipeline.store.atomic as atomic_module
import pipeline.store.writer as writer_module
from pipeline.store import (
    ActivationStore,
    NotAStoreError,
    StoreMismatchError,
    StoreWriter,
    UnitWriteError,
)
from pipeline.store.plan import PlanConfig
from tests.store_helpers import (
    HOOKS,
    META,
    expected_float32,
    must_not_plan,
    planner_for,
    small_plan,
    token_table,
    unit_activations,
    write_store,
)


def snapshot(root):
    """Bytes of every data file under a store: Zarr shards and plan parts (unit records
    hold timings, so they are compared by name with `unit_files`)."""
    files = [
        *(root / "activations.zarr").rglob("c/*/*"),
        *(root / "tokens").glob("*"),
        *(root / "docs").glob("*"),
        *(root / "plan").glob("*"),
    ]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.is_file()}


def unit_files(root):
    """What writing units creates: Zarr shards and commit records."""
    files = [*(root / "activations.zarr").rglob("c/*/*"), *(root / "units").glob("*")]
    return sorted(p.relative_to(root).as_posix() for p in files if p.is_file())


def hidden_temps(root):
    return [p for p in root.rglob(".*") if p.is_file()]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_keeps_every_row_aligned(tmp_path, dtype):
    plan = small_plan()
    write_store(tmp_path / "s", plan, dtype=dtype)
    store = ActivationStore.open(tmp_path / "s")
    for i, (hook, d) in enumerate(HOOKS.items()):
        got = store.read(hook)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected_float32(0, plan.num_rows, d, dtype, i))
        assert store.activations(hook).attrs["logical_dtype"] == dtype


def test_bfloat16_is_stored_as_uint16_bits(tmp_path):
    write_store(tmp_path / "s", small_plan(), dtype="bfloat16")
    group = zarr.open_group(tmp_path / "s" / "activations.zarr", mode="r")
    array = group["encoder.layer.0"]
    assert array.dtype == np.uint16
    assert array.metadata.dimension_names == ("row", "feature")


def test_arrays_are_full_size_with_one_shard_per_unit(tmp_path):
    plan = small_plan(rows_per_unit=500)
    write_store(tmp_path / "s", plan)
    array = zarr.open_group(tmp_path / "s" / "activations.zarr", mode="r")["encoder.layer.0"]
    assert array.shape == (plan.num_rows, 8)
    assert array.shards == (500, 8)
    shard_dir = tmp_path / "s" / "activations.zarr" / "encoder.layer.0" / "c"
    assert sorted(int(p.name) for p in shard_dir.iterdir()) == list(range(plan.num_units))


def test_rewriting_units_in_any_order_gives_identical_bytes(tmp_path):
    plan = small_plan()
    first = write_store(tmp_path / "s", plan, finalize=False)
    before = snapshot(tmp_path / "s")
    for unit in reversed(range(plan.num_units)):
        first.write_unit(unit, unit_activations(plan, unit, HOOKS, "float32"))
    assert snapshot(tmp_path / "s") == before
    write_store(tmp_path / "t", plan, units=list(reversed(range(plan.num_units))), finalize=False)
    assert snapshot(tmp_path / "t") == before


def test_zarr_fallback_path_writes_the_same_bytes(tmp_path, monkeypatch):
    plan = small_plan()
    write_store(tmp_path / "direct", plan, dtype="bfloat16", finalize=False)
    monkeypatch.setattr(writer_module, "direct_write_supported", lambda array: False)
    write_store(tmp_path / "zarr", plan, dtype="bfloat16", finalize=False)
    assert snapshot(tmp_path / "zarr") == snapshot(tmp_path / "direct")


def test_commit_record_holds_rows_checksums_timing_and_attempt(tmp_path):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, units=[], finalize=False, fsync=True)
    acts = unit_activations(plan, 1, HOOKS, "float32")
    record = writer.write_unit(1, acts, timing={"forward_s": 0.5}, attempt={"worker": "w3"})
    on_disk = json.loads((tmp_path / "s" / "units" / "unit-00001.json").read_text())
    assert on_disk == record
    assert (record["row_start"], record["row_stop"], record["num_rows"]) == (500, 1000, 500)
    assert record["timing"]["forward_s"] == 0.5 and "store_total_s" in record["timing"]
    assert record["attempt"]["worker"] == "w3" and "host" in record["attempt"]
    assert set(record["arrays"]) == set(HOOKS)
    windows = plan.windows_for_unit(1)
    assert (record["window_start"], record["window_stop"]) == (windows[0], windows[-1] + 1)
    assert "tokens" not in record  # the token table was written by the planner
    assert writer.committed_units() == {1}
    assert writer.pending_units() == [u for u in range(plan.num_units) if u != 1]


def test_store_json_records_fingerprint_plan_stats_and_parts(tmp_path):
    plan = small_plan()
    write_store(tmp_path / "s", plan, units=[], finalize=False)
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["format_version"] == 2
    assert meta["fingerprint"]["model_id"] == META["model_id"]
    assert meta["fingerprint"]["hooks"] == HOOKS
    assert meta["fingerprint"]["context_length"] == plan.config.context_length
    assert len(meta["plan_fingerprint"]) == 64
    assert meta["plan"]["num_rows"] == meta["num_rows"] == plan.num_rows
    assert meta["plan"]["num_documents"] == 4 and meta["plan"]["num_shards"] == 1
    # The pydoc corpus is one shard; the packed last window's [SEP] is a closing part.
    assert [p["part"] for p in meta["parts"]] == [0, 1]
    assert meta["parts"][-1]["row_stop"] == plan.num_rows
    assert meta["part_name_width"] == 5
    assert meta["hooks"]["encoder.layer.0"]["stored_dtype"] == "float32"


def test_plan_json_holds_the_fingerprint_written_before_planning(tmp_path):
    write_store(tmp_path / "s", small_plan(), units=[], finalize=False)
    planned = json.loads((tmp_path / "s" / "plan" / "plan.json").read_text())
    stored = json.loads((tmp_path / "s" / "store.json").read_text())
    assert planned == {"format_version": 2, "fingerprint": stored["fingerprint"], "command": None}


def test_reopening_with_the_same_config_resumes(tmp_path):
    plan = small_plan()
    write_store(tmp_path / "s", plan, units=[0, 2], finalize=False)
    writer = StoreWriter.create_or_open(
        tmp_path / "s", META, HOOKS, "float32", plan.config, must_not_plan
    )
    assert writer.committed_units() == {0, 2}
    assert writer.pending_units() == [1] + list(range(3, plan.num_units))


def test_workers_open_the_drivers_store_and_share_commits(tmp_path):
    plan = small_plan()
    write_store(tmp_path / "s", plan, units=[0], finalize=False)
    worker = StoreWriter.open(tmp_path / "s")
    record = worker.write_unit(1, unit_activations(plan, 1, HOOKS, "float32"))
    assert worker.committed_units() == {0, 1}
    windows = plan.windows_for_unit(1)  # read by the worker from the planned token parts
    assert (record["window_start"], record["window_stop"]) == (windows[0], windows[-1] + 1)


def test_workers_cannot_open_a_store_still_being_planned(tmp_path):
    plan = small_plan()
    with pytest.raises(RuntimeError, match="crash"):
        StoreWriter.create_or_open(
            tmp_path / "s", META, HOOKS, "float32", plan.config, _crash_while_planning
        )
    with pytest.raises(NotAStoreError, match="still being planned"):
        StoreWriter.open(tmp_path / "s")


def _crash_while_planning(root):
    raise RuntimeError("crash while planning")


def test_a_different_config_is_refused_naming_every_field_before_planning(tmp_path):
    write_store(tmp_path / "s", small_plan(), units=[0], finalize=False)
    before = snapshot(tmp_path / "s"), unit_files(tmp_path / "s")
    other_meta = {**META, "model_id": "gpt2"}
    other = PlanConfig(context_length=64, mode="document", rows_per_unit=500, max_tokens=900)
    with pytest.raises(StoreMismatchError) as info:
        StoreWriter.create_or_open(
            tmp_path / "s", other_meta, HOOKS, "float16", other, must_not_plan
        )
    message = str(info.value)
    for field in ("model_id", "dtype", "context_length", "mode", "max_tokens"):
        assert field in info.value.differences and field in message
    assert "'sentence-transformers/all-MiniLM-L6-v2'" in message and "'gpt2'" in message
    assert "pass --overwrite to replace it" in message
    assert "rows_per_unit" not in info.value.differences
    assert (snapshot(tmp_path / "s"), unit_files(tmp_path / "s")) == before


def test_overwrite_replaces_the_store_and_plans_it_again(tmp_path):
    write_store(tmp_path / "s", small_plan())
    other = small_plan(context_length=64)
    writer = StoreWriter.create_or_open(
        tmp_path / "s", META, HOOKS, "float32", other.config, planner_for(other), overwrite=True
    )
    assert writer.committed_units() == set()
    assert unit_files(tmp_path / "s") == []
    assert not (tmp_path / "s" / "_SUCCESS").exists()
    assert writer.num_rows == other.num_rows
    assert writer.index.read_rows(0, other.num_rows).equals(token_table(other))


def format_1_store(path):
    """A store laid out as format 1: token files per unit, docs.parquet, no plan/."""
    write_store(path, small_plan())
    for folder in ("docs", "plan", "tokens"):
        shutil.rmtree(path / folder)
    (path / "tokens").mkdir()
    (path / "tokens" / "unit-00000.parquet").write_bytes(b"PAR1")
    (path / "docs.parquet").write_bytes(b"PAR1")
    meta = json.loads((path / "store.json").read_text())
    (path / "store.json").write_text(json.dumps({**meta, "format_version": 1}))
    return path


def test_resuming_a_format_1_store_is_refused_saying_what_to_do(tmp_path):
    format_1_store(tmp_path / "s")
    plan = small_plan()
    with pytest.raises(NotAStoreError, match="is a format 1 store.*--overwrite"):
        StoreWriter.create_or_open(
            tmp_path / "s", META, HOOKS, "float32", plan.config, must_not_plan
        )
    assert (tmp_path / "s" / "docs.parquet").exists()


def test_overwrite_replaces_a_format_1_store(tmp_path):
    format_1_store(tmp_path / "s")
    plan = small_plan()
    writer = StoreWriter.create_or_open(
        tmp_path / "s", META, HOOKS, "float32", plan.config, planner_for(plan), overwrite=True
    )
    assert writer.store_json["format_version"] == 2
    assert not (tmp_path / "s" / "docs.parquet").exists()
    assert sorted(p.name for p in (tmp_path / "s" / "tokens").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]


def test_store_path_that_is_a_file_is_rejected(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        StoreWriter.create_or_open(path, META, HOOKS, "float32", small_plan().config, must_not_plan)


def test_a_foreign_directory_is_never_deleted(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not an activation store"):
        StoreWriter.create_or_open(
            tmp_path, META, HOOKS, "float32", small_plan().config, must_not_plan, overwrite=True
        )
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_meta_that_contradicts_the_arguments_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"meta\['dtype'\] = 'float16' disagrees"):
        StoreWriter.create_or_open(
            tmp_path / "s",
            {**META, "dtype": "float16"},
            HOOKS,
            "float32",
            small_plan().config,
            must_not_plan,
        )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("encoder.layer.5"), r"missing hooks \['encoder.layer.5'\]"),
        (lambda a: a.update({"encoder.layer.0": a["encoder.layer.0"][:-1]}), "expected shape"),
        (lambda a: a.update({"encoder.layer.0": a["encoder.layer.0"].astype(np.float64)}), "dtype"),
    ],
)
def test_bad_activations_are_rejected_before_anything_is_written(tmp_path, change, message):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, units=[], finalize=False)
    acts = unit_activations(plan, 0, HOOKS, "float32")
    change(acts)
    before = snapshot(tmp_path / "s")
    with pytest.raises(ValueError, match=message):
        writer.write_unit(0, acts)
    assert unit_files(tmp_path / "s") == []
    assert snapshot(tmp_path / "s") == before
    assert writer.committed_units() == set()


def test_timing_that_is_not_json_is_rejected_before_writing(tmp_path):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, units=[], finalize=False)
    with pytest.raises(ValueError, match="timing must be JSON-serialisable"):
        writer.write_unit(0, unit_activations(plan, 0, HOOKS, "float32"), timing={"t": object()})
    assert unit_files(tmp_path / "s") == []


def test_bfloat16_store_explains_that_it_wants_uint16_bits(tmp_path):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, dtype="bfloat16", units=[], finalize=False)
    with pytest.raises(ValueError, match="raw uint16 bits"):
        writer.write_unit(0, unit_activations(plan, 0, HOOKS, "float32"))


class _FullDisk:
    """A file whose writes fail with ENOSPC after the file was created."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        self._real.write(data[:10] if isinstance(data, str) else bytes(memoryview(data)[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def _fill_disk_at(monkeypatch, folder, name_part=""):
    """Writes of files under `folder` whose names contain `name_part` fail with ENOSPC."""

    def failing_open(path, mode="r", *args, **kwargs):
        real = open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned to the caller)
        full = "w" in mode and f"/{folder}/" in str(path) and name_part in Path(path).name
        return _FullDisk(real) if full else real

    monkeypatch.setattr(atomic_module, "open", failing_open, raising=False)


@pytest.mark.parametrize("stage", ["activations.zarr", "units"])  # shard, record
def test_disk_full_leaves_no_commit_and_no_temps_and_a_rerun_completes(
    tmp_path, monkeypatch, stage
):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, units=[0], finalize=False)
    _fill_disk_at(monkeypatch, stage)
    with pytest.raises(UnitWriteError) as info:
        writer.write_unit(1, unit_activations(plan, 1, HOOKS, "float32"))
    assert info.value.errno == errno.ENOSPC
    assert "unit 1" in str(info.value) and str(tmp_path / "s") in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert writer.committed_units() == {0}
    assert hidden_temps(tmp_path / "s") == []

    monkeypatch.undo()
    for unit in writer.pending_units():
        writer.write_unit(unit, unit_activations(plan, unit, HOOKS, "float32"))
    writer.finalize()
    assert ActivationStore.open(tmp_path / "s").verify()["num_committed"] == plan.num_units


@pytest.mark.parametrize("stage", ["tokens", "docs", "plan"])  # token file, docs file, record
def test_disk_full_while_planning_leaves_no_part_record_and_a_rerun_completes(
    tmp_path, monkeypatch, stage
):
    plan = small_plan()
    clean = write_store(tmp_path / "clean", plan, units=[], finalize=False)
    _fill_disk_at(monkeypatch, stage, name_part="part-")
    with pytest.raises(OSError) as info:
        write_store(tmp_path / "s", plan, units=[], finalize=False)
    assert info.value.errno == errno.ENOSPC
    assert list((tmp_path / "s" / "plan").glob("part-*.json")) == []
    assert not (tmp_path / "s" / "store.json").exists()
    assert hidden_temps(tmp_path / "s") == []

    monkeypatch.undo()
    writer = write_store(tmp_path / "s", plan)
    assert ActivationStore.open(tmp_path / "s").verify()["num_committed"] == plan.num_units
    assert writer.store_json["plan_fingerprint"] == clean.store_json["plan_fingerprint"]
    assert writer.index.read_rows(0, plan.num_rows).equals(token_table(plan))


def test_finalize_refuses_while_units_are_pending(tmp_path):
    writer = write_store(tmp_path / "s", small_plan(), units=[0, 2], finalize=False)
    with pytest.raises(ValueError, match=r"units are not committed \(units 1, 3"):
        writer.finalize()
    assert not (tmp_path / "s" / "_SUCCESS").exists()


def test_finalize_consolidates_metadata_writes_success_and_removes_stale_temps(tmp_path):
    plan = small_plan()
    writer = write_store(tmp_path / "s", plan, finalize=False)
    stale = tmp_path / "s" / "tokens" / ".part-00001.parquet.123-abc.tmp"
    stale.write_bytes(b"left by a killed attempt")
    success = writer.finalize()
    assert not stale.exists()
    assert json.loads((tmp_path / "s" / "_SUCCESS").read_text()) == success
    assert success["num_rows"] == plan.num_rows
    group_json = json.loads((tmp_path / "s" / "activations.zarr" / "zarr.json").read_text())
    assert set(group_json["consolidated_metadata"]["metadata"]) == set(HOOKS)


def test_hooks_of_different_widths_get_distinct_feature_dimensions(tmp_path):
    hooks = {"resid": 8, "mlp": 32}
    write_store(tmp_path / "s", small_plan(), hooks=hooks)
    group = zarr.open_group(tmp_path / "s" / "activations.zarr", mode="r")
    assert group["resid"].metadata.dimension_names == ("row", "feature_8")
    assert group["mlp"].metadata.dimension_names == ("row", "feature_32")
