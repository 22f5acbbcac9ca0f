"""Capture configs are checked strictly when built, naming the key, and `jobs.*` commands
report such errors (and any user error) in one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.capture import main as capture_main
from jobs.cli import one_line, user_error
from pipeline.capture import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_size=true", "batch_size must be an integer >= 1, got True (bool)"),
        ("max_tokens=abc", "max_tokens must be an integer >= 1 or null, got 'abc' (str)"),
        ("max_tokens=1500.5", "max_tokens must be an integer >= 1 or null, got 1500.5 (float)"),
        ("context_length=0", "context_length must be an integer >= 1, got 0"),
        ("num_gpus_per_worker=abc", "num_gpus_per_worker must be a number >= 0.0, got 'abc'"),
        ("num_cpus_per_worker=true", "num_cpus_per_worker must be a number >= 0.0, got True"),
        ("max_retries=-1", "max_retries must be an integer >= 0, got -1"),
        ("overwrite=yes please", "overwrite must be true or false, got 'yes please'"),
        ("dtype=float64", "dtype must be one of ['float32', 'float16', 'bfloat16']"),
        ("hooks=[true]", "hooks: each is a layer name"),
        ("hooks=layer_1,layer_1", "hooks must be distinct"),
        ("corpus.shard_bytes=1.5", "corpus.shard_bytes must be an integer >= 1, got 1.5"),
        ("corpus.max_documents=false", "corpus.max_documents must be an integer >= 1 or null"),
        ("corpus.one_per_line=1", "corpus.one_per_line must be true or false, got 1 (int)"),
        ("bogus=1", "unknown config keys ['bogus']"),
        ("max_tokens=[1", "--set max_tokens: '[1' is not a YAML value"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_good_values_and_integer_hooks_are_accepted():
    config = load_config(None, ["hooks=[3, layer_1]", "num_gpus_per_worker=0.5", "max_tokens=null"])
    assert config.hooks == (3, "layer_1") and config.num_gpus_per_worker == 0.5


def test_a_config_error_is_one_line_and_exit_2(capsys, tmp_path):
    assert capture_main(["--set", "batch_size=true", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: batch_size must be an integer >= 1, got True (bool) (--debug shows the traceback)"
    ]
    assert not (tmp_path / "s").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be"):
        capture_main(["--set", "batch_size=true", "--out", str(tmp_path / "s"), "--debug"])


def test_a_missing_config_file_and_an_unwritable_out_are_one_line(capsys, tmp_path):
    assert capture_main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert capture_main(["--no-ray", "--out", str(tmp_path / "file" / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a writable folder" in err[0]


def test_an_unexpected_error_keeps_its_traceback():
    import json

    try:
        json.loads("{")
    except ValueError as e:
        assert user_error(e) is None  # raised inside the json library: a bug to show in full
    try:
        load_config(None, ["batch_size=0"])
    except ValueError as e:
        assert user_error(e) is e  # raised on purpose by our own checks
    assert user_error(TypeError("x")) is None
    assert isinstance(user_error(FileNotFoundError(2, "missing", "f.txt")), OSError)
    assert one_line(ValueError("a\n  b: 1\n  c: 2")) == "a; b: 1; c: 2"


def test_the_command_line_prints_one_line_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "jobs.capture", "--set", "max_tokens=1500.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: max_tokens must be an integer >= 1 or null, got 1500.5 (float) "
        "(--debug shows the traceback)"
    ]
