"""A real full disk: capture into a small tmpfs that fills part way, then grow it and rerun.

The tmpfs is sized from the clean run's own files (tmpfs counts whole pages per file), so
the disk fills inside a chosen write: a Zarr shard of a middle unit, or a middle part's
token file while planning. The failed run must say which file it could not write, leave
no partial file where readers look, and leave what it committed intact; after the disk
is grown the same capture finishes and equals a clean run byte for byte.

Mounting needs root (CI runs as root); elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import zarr

from pipeline.store.writer import UnitWriteError
from tests.integration.test_crash_anywhere import (
    assert_only_complete_files_visible,
    assert_store_equals_clean,
    capture_in_process,
    capture_sets,
    hidden_files,
    write_corpus,
)

PAGE = os.sysconf("SC_PAGE_SIZE")


def pages(path: Path) -> int:
    """Pages a file takes on tmpfs (directories take none)."""
    return -(-path.stat().st_size // PAGE)


@contextmanager
def small_disk(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `folder`; always unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as e:
        pytest.skip(f"cannot mount a tmpfs to fill: {e}")
    if mounted.returncode != 0:
        reason = (mounted.stderr or mounted.stdout).strip()
        print(f"mount -t tmpfs refused: {reason}")
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {reason}")
    try:
        yield folder
    finally:
        unmounted = subprocess.run(["umount", str(folder)], capture_output=True, text=True)
        if unmounted.returncode != 0:  # detach it anyway, then say why it was busy
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
            raise AssertionError(f"umount {folder}: {unmounted.stderr.strip()}")


def grow(folder: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


@pytest.fixture(scope="module")
def clean(tiny_gpt2_path, tmp_path_factory):
    """The capture's `--set` values and a store captured on a disk with room."""
    root = tmp_path_factory.mktemp("full-disk")
    sets = capture_sets(tiny_gpt2_path, write_corpus(root / "corpus.jsonl"))
    capture_in_process(sets, root / "clean")
    return sets, root / "clean"


def failed_capture(sets: list[str], out: Path) -> tuple[type, int | None, str]:
    """Run the capture expecting a disk error; its type, errno and message."""
    try:
        capture_in_process(sets, out)
    except OSError as e:
        return type(e), e.errno, str(e)
    pytest.fail("the capture did not fail on the full disk")


def committed(store: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (store / "units").glob("unit-*.json"))


def assert_committed_units_hold_their_data(store: Path) -> None:
    """Each committed unit's rows hash to the sha256 its record holds."""
    group = zarr.open_group(store / "activations.zarr", mode="r")
    for unit in committed(store):
        record = json.loads((store / "units" / f"unit-{unit:05d}.json").read_text())
        for hook, entry in record["arrays"].items():
            rows = group[hook][record["row_start"] : record["row_stop"]]
            assert hashlib.sha256(rows.tobytes()).hexdigest() == entry["sha256"], (unit, hook)


def test_disk_full_while_writing_units_fails_naming_the_file_and_a_rerun_finishes(clean, tmp_path):
    sets, clean_store = clean
    shards = sorted((clean_store / "activations.zarr").glob("*/c/*/0"))
    per_unit = sum(pages(p) for p in shards if p.parts[-2] == "4") + 1  # + its record
    planned = sum(
        pages(p)
        for p in clean_store.rglob("*")
        if p.is_file() and p not in shards and p.parent.name != "units" and p.name != "_SUCCESS"
    )
    # Room for the plan, units 0-3, and half of unit 4's two shards.
    size = (planned + 4 * per_unit + per_unit // 2) * PAGE
    with small_disk(tmp_path / "disk", size) as disk:
        out = disk / "store"
        kind, code, message = failed_capture(sets, out)
        print(f"tmpfs of {size} bytes: {kind.__name__}: {message}")
        assert issubclass(kind, UnitWriteError) and code == errno.ENOSPC
        assert "unit 4" in message and str(out) in message, message
        assert f"{out}/activations.zarr/layer_" in message, "names the shard it could not write"
        assert "stays pending" in message and "No space left" in message, message
        assert committed(out) == [0, 1, 2, 3]
        assert not (out / "_SUCCESS").exists()
        assert hidden_files(out) == [], "a failed write removes its temp"
        assert_only_complete_files_visible(out, clean_store)
        assert_committed_units_hold_their_data(out)

        grow(disk, 16 * 2**20)
        result = capture_in_process(sets, out)
        assert result.units_computed == result.num_units - 4
        assert_store_equals_clean(out, clean_store)


def test_disk_full_while_planning_fails_naming_the_token_file_and_a_rerun_finishes(clean, tmp_path):
    sets, clean_store = clean
    # Planning writes plan/plan.json, then per part its tokens, docs and record files.
    part = 3
    tokens = clean_store / "tokens" / f"part-{part:05d}.parquet"
    assert pages(tokens) >= 2, "the disk must fill inside the token file"
    before = pages(clean_store / "plan" / "plan.json") + sum(
        pages(clean_store / folder / f"part-{p:05d}.{ext}")
        for p in range(part)
        for folder, ext in (("tokens", "parquet"), ("docs", "parquet"), ("plan", "json"))
    )
    size = (before + pages(tokens) - 1) * PAGE
    with small_disk(tmp_path / "disk", size) as disk:
        out = disk / "store"
        kind, code, message = failed_capture(sets, out)
        print(f"tmpfs of {size} bytes: {kind.__name__}: {message}")
        assert code == errno.ENOSPC
        assert f"{out}/tokens/part-{part:05d}.parquet" in message, message
        assert "run the same command again to resume planning" in message
        assert not (out / "store.json").exists()
        assert sorted(p.name for p in (out / "plan").glob("part-*.json")) == [
            f"part-{p:05d}.json" for p in range(part)
        ]
        assert hidden_files(out) == [], "a failed write removes its temp"
        assert_only_complete_files_visible(out, clean_store)  # reads tokens/ with pandas
        assert len(pd.read_parquet(out / "tokens")) == sum(
            len(pd.read_parquet(clean_store / "tokens" / f"part-{p:05d}.parquet"))
            for p in range(part)
        )

        grow(disk, 16 * 2**20)
        capture_in_process(sets, out)
        assert_store_equals_clean(out, clean_store)
