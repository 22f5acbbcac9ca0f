"""SAE feature statistics over a store: equal to brute force, mergeable, written as tables."""

from __future__ import annotations

import subprocess
import sys
from functools import reduce
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline import TopKSae
from pipeline.capture import CaptureConfig, capture
from pipeline.stats import FeatureStats, sae_feature_stats, unit_feature_stats, write_feature_tables
from pipeline.store.reader import ActivationStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store_and_sae(tiny_gpt2_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("sae-stats")
    config = CaptureConfig(
        model=str(tiny_gpt2_path),
        hooks=("layer_2",),
        dtype="float32",
        context_length=64,
        rows_per_unit=512,
        max_tokens=2800,
        out=str(root / "store"),
        torch_threads=1,
    )
    capture(config, progress=False)
    torch.manual_seed(0)
    sae = TopKSae(n_latents=96, n_inputs=64, k=4)
    sae.save(root / "sae")
    return root / "store", root / "sae", sae


def brute_force(store_path, sae):
    x = torch.from_numpy(ActivationStore.open(store_path).read("layer_2"))
    with torch.no_grad():
        codes = sae.encode(x).double()
    return codes


def test_stats_equal_brute_force(store_and_sae):
    store_path, _, sae = store_and_sae
    stats = sae_feature_stats(store_path, "layer_2", sae, top_k=5)
    codes_NF = brute_force(store_path, sae)
    fired_NF = codes_NF > 0
    assert stats.num_tokens == codes_NF.shape[0] == 2800
    assert torch.equal(stats.count_F, fired_NF.sum(0))
    torch.testing.assert_close(stats.sum_F, codes_NF.sum(0))
    torch.testing.assert_close(stats.max_F, codes_NF.max(0).values.clamp(min=0))
    for latent in [int(i) for i in fired_NF.sum(0).argsort(descending=True)[:5]]:
        column = codes_NF[:, latent]
        order = sorted(range(len(column)), key=lambda r: (-float(column[r]), r))[:5]
        assert stats.examples.row_ids()[latent].tolist() == order


def test_partials_merge_in_any_grouping(store_and_sae):
    store_path, _, sae = store_and_sae
    store = ActivationStore.open(store_path)
    parts = [unit_feature_stats(store, "layer_2", sae, u, top_k=5) for u in range(store.num_units)]
    left = reduce(FeatureStats.merge, parts)
    right = reduce(FeatureStats.merge, reversed(parts))
    for a, b in [(left.count_F, right.count_F), (left.max_F, right.max_F)]:
        assert torch.equal(a, b)
    torch.testing.assert_close(left.sum_F, right.sum_F)
    assert torch.equal(left.examples.row_ids(), right.examples.row_ids())


def test_tables_join_examples_to_their_tokens(store_and_sae, tmp_path):
    store_path, _, sae = store_and_sae
    out = write_feature_tables(
        sae_feature_stats(store_path, "layer_2", sae, top_k=3), store_path, tmp_path / "t"
    )
    features = pd.read_parquet(out / "features.parquet")
    examples = pd.read_parquet(out / "examples.parquet")
    assert len(features) == 96 and features.frequency.between(0, 1).all()
    tokens = ActivationStore.open(store_path).tokens().to_pandas().set_index("row")
    first = examples.iloc[0]
    assert first.token == tokens.loc[first.row, "token"]
    assert f"[[{first.token}]]" in first.context
    assert (examples.groupby("latent").activation.apply(lambda s: s.is_monotonic_decreasing)).all()


def test_width_mismatch_is_a_clear_error(store_and_sae):
    store_path, _, _ = store_and_sae
    with pytest.raises(ValueError, match="takes 32 inputs but hook 'layer_2'.*width 64"):
        sae_feature_stats(store_path, "layer_2", TopKSae(n_latents=16, n_inputs=32, k=2))


def test_job_writes_tables_without_ray(store_and_sae, tmp_path):
    store_path, sae_dir, _ = store_and_sae
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.sae_stats",
            "--store",
            str(store_path),
            "--hook",
            "layer_2",
            "--sae",
            str(sae_dir),
            "--out",
            str(tmp_path / "out"),
            "--no-ray",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2800 tokens" in done.stdout
    assert (tmp_path / "out" / "examples.parquet").exists()
