"""Capture configs are checked strictly when built, naming the key, and `jobs.*` commands
report such errors (and any user error) in one line with exit status 2."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.capture import main as capture_main
from jobs.cli import one_line, user_error
from pipeline.capture import load_config
from pipeline.capture.config_io import config_from_dict, config_to_dict
from pipeline.ray_config import RAY_KEYS, RayConfig, ray_config_from_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_size=true", "batch_size must be an integer >= 1, got True (bool)"),
        ("max_tokens=abc", "max_tokens must be an integer >= 1 or null, got 'abc' (str)"),
        ("max_tokens=1500.5", "max_tokens must be an integer >= 1 or null, got 1500.5 (float)"),
        ("context_length=0", "context_length must be an integer >= 1, got 0"),
        ("ray.num_gpus_per_worker=abc", "num_gpus_per_worker must be a number >= 0.0, got 'abc'"),
        ("ray.num_cpus_per_worker=true", "num_cpus_per_worker must be a number >= 0.0, got True"),
        ("ray.max_retries=-1", "max_retries must be an integer >= 0, got -1"),
        ("ray.num_workers=0", "num_workers must be an integer >= 1, got 0"),
        (
            "ray.units_in_flight_per_worker=1.5",
            "units_in_flight_per_worker must be an integer >= 1",
        ),
        ("ray.colour=1", "unknown ray keys ['colour']; known keys: num_workers, num_cpus_per_"),
        ("ray=4", "ray must be a mapping of Ray settings"),
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
    config, ray_config = load_config(
        None, ["hooks=[3, layer_1]", "ray.num_gpus_per_worker=0.5", "max_tokens=null"]
    )
    assert config.hooks == (3, "layer_1") and ray_config.num_gpus_per_worker == 0.5


def test_no_ray_section_gives_the_ray_defaults():
    _, ray_config = load_config(None, [])
    assert ray_config == RayConfig()
    assert (ray_config.num_workers, ray_config.max_retries) == (2, 3)
    assert (ray_config.num_cpus_per_worker, ray_config.num_gpus_per_worker) == (1.0, 0.0)
    assert ray_config.units_in_flight_per_worker == 2


def test_the_ray_section_of_a_yaml_and_ray_overrides_make_the_ray_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "batch_size: 4\nray:\n  num_workers: 5\n  num_gpus_per_worker: 0.5\n  max_retries: 0\n"
    )
    config, ray_config = load_config(path)
    assert config.batch_size == 4
    assert ray_config == RayConfig(num_workers=5, num_gpus_per_worker=0.5, max_retries=0)
    config, ray_config = load_config(
        path, ["ray.num_workers=3", "ray.units_in_flight_per_worker=4"]
    )
    assert (ray_config.num_workers, ray_config.units_in_flight_per_worker) == (3, 4)
    assert ray_config.num_gpus_per_worker == 0.5 and ray_config.max_retries == 0, "merged"
    _, ray_config = load_config(None, ["ray.num_workers=3"])
    assert ray_config == RayConfig(num_workers=3)


@pytest.mark.parametrize("key", RAY_KEYS)
def test_a_ray_setting_at_the_top_level_is_one_error_naming_its_new_key(tmp_path, key):
    message = f"{key} is a Ray setting: put it under ray: in the YAML, or --set ray.{key}=1"
    with pytest.raises(ValueError) as info:
        load_config(None, [f"{key}=1"])
    assert str(info.value) == message
    path = tmp_path / "old.yaml"
    path.write_text(f"batch_size: 4\n{key}: 1\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_dict({key: 1})


def test_several_top_level_ray_settings_are_named_in_one_line():
    with pytest.raises(ValueError) as info:
        load_config(None, ["num_workers=4", "max_retries=1", "batch_size=2"])
    assert str(info.value) == (
        "num_workers, max_retries are Ray settings: put them under ray: in the YAML, "
        "or --set ray.num_workers=4 --set ray.max_retries=1"
    )


def test_the_job_reports_a_top_level_ray_setting_in_one_line(capsys, tmp_path):
    assert capture_main(["--no-ray", "--set", "num_workers=4", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: num_workers is a Ray setting: put it under ray: in the YAML, or "
        "--set ray.num_workers=4 (--debug shows the traceback)"
    ]
    assert not (tmp_path / "s").exists()


def test_config_from_dict_builds_the_capture_config_alone_and_refuses_a_ray_section():
    config = config_from_dict({"batch_size": 2})
    assert config.batch_size == 2 and not hasattr(config, "num_workers")
    with pytest.raises(ValueError, match="ray is not a capture setting: .*load_config"):
        config_from_dict({"batch_size": 2, "ray": {"num_workers": 2}})
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({"num_workers": 0}, "num_workers must be an integer >= 1, got 0"),
        ({"num_workers": True}, "num_workers must be an integer >= 1, got True (bool)"),
        ({"num_workers": 2.0}, "num_workers must be an integer >= 1, got 2.0 (float)"),
        ({"units_in_flight_per_worker": 0}, "units_in_flight_per_worker must be an integer >= 1"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, got -1"),
        ({"max_retries": None}, "max_retries must be an integer >= 0, got None (NoneType)"),
        (
            {"num_gpus_per_worker": "abc"},
            "num_gpus_per_worker must be a number >= 0.0, got 'abc' (str)",
        ),
        ({"num_cpus_per_worker": -0.5}, "num_cpus_per_worker must be a number >= 0.0, got -0.5"),
        ({"num_cpus_per_worker": float("nan")}, "num_cpus_per_worker must be a number >= 0.0"),
    ],
)
def test_ray_config_values_are_checked_naming_the_key(values, message):
    with pytest.raises(ValueError) as info:
        RayConfig(**values)
    assert message in str(info.value)
    with pytest.raises(ValueError) as info:
        ray_config_from_dict(values)
    assert message in str(info.value)


def test_ray_config_from_dict_refuses_unknown_keys_and_non_mappings():
    assert ray_config_from_dict({"num_workers": 4, "num_cpus_per_worker": 0.5}) == RayConfig(
        num_workers=4, num_cpus_per_worker=0.5
    )
    assert ray_config_from_dict(None) == RayConfig()
    with pytest.raises(ValueError) as info:
        ray_config_from_dict({"workers": 4})
    assert str(info.value) == (
        "unknown ray keys ['workers']; known keys: num_workers, num_cpus_per_worker, "
        "num_gpus_per_worker, units_in_flight_per_worker, max_retries"
    )
    with pytest.raises(ValueError, match=r"ray must be a mapping .* got \[4\] \(list\)"):
        ray_config_from_dict([4])


def test_the_ray_config_is_frozen_and_keyword_only():
    config = RayConfig(num_workers=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_workers = 5
    with pytest.raises(TypeError):
        RayConfig(4)


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
