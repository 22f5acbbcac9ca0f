"""Session-wide fixtures: models are built once per test session and loaded per test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.helpers import build_tiny_gpt2, train_bpe_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe-tokenizer")
    train_bpe_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory, bpe_tokenizer_dir):
    """A 4-block GPT-2 (d=64) with a BPE tokenizer trained on the pydoc corpus."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), tokenizer_dir=bpe_tokenizer_dir)


@pytest.fixture(scope="session")
def seed_gpt2_path(tmp_path_factory, bpe_tokenizer_dir):
    """A 12-block GPT-2 with d=768 (narrow MLPs), so the seed page's examples run as written."""
    return build_tiny_gpt2(
        tmp_path_factory.mktemp("seed-gpt2"),
        n_layer=12,
        n_embd=768,
        n_head=12,
        n_inner=256,
        tokenizer_dir=bpe_tokenizer_dir,
    )


@pytest.fixture(scope="session")
def minilm_path():
    from pipeline.model.defaults import default_model_path

    return default_model_path()


@pytest.fixture
def tiny_lm(tiny_gpt2_path):
    from pipeline import LanguageModel

    return LanguageModel.from_pretrained(tiny_gpt2_path)


@pytest.fixture
def minilm(minilm_path):
    from pipeline import LanguageModel

    return LanguageModel.from_pretrained(minilm_path)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: intra-op threads only add synchronisation (and suffer on busy CI boxes)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (tests/browser.py); skipped without one, except in CI.

    In CI a missing browser fails: a skipped browser test there would look like a passing one.
    """
    from tests.browser import Browser, find_chromium

    if find_chromium() is None:
        reason = (
            "headless Chromium is not installed: `make test` installs it with apt-get as root;"
            " otherwise `apt-get install chromium`"
        )
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{reason} (CI is set, so browser tests may not skip)", pytrace=False)
        pytest.skip(reason)
    with Browser() as chromium:
        yield chromium
