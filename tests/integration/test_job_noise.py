"""Jobs' logs carry their own progress lines, not transformers' model-loading bars."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.test_capture import REPO, subprocess_args


def run_capture(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(name, None)
    # Without --quiet: the job's own progress lines stay, only the loading bar must go.
    command = [sys.executable, "-m", "jobs.capture", "--no-ray", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_loading_a_model_without_quieting_draws_the_loading_bar(tiny_gpt2_path):
    """The control: what `quiet_model_loading` must remove is there without it."""
    code = (
        "from transformers import AutoModelForCausalLM; "
        f"AutoModelForCausalLM.from_pretrained({str(tiny_gpt2_path)!r})"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env.pop("TRANSFORMERS_VERBOSITY", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "Loading weights" in done.stderr


def test_capture_job_does_not_print_the_loading_weights_bar(tiny_gpt2_path, tmp_path):
    done = run_capture(subprocess_args(tiny_gpt2_path, tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "progress:" in done.stderr  # the job's own lines
    assert "Loading weights" not in done.stderr


def test_quiet_model_loading_reaches_child_processes(monkeypatch):
    from pipeline.model.quiet import quiet_model_loading

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_model_loading()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
