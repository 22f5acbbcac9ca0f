"""SAE feature statistics over a store: equal to brute force, mergeable, written as tables."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import TopKSae
from pipeline.capture import CaptureConfig, capture
from pipeline.stats import FeatureStats, sae_feature_stats, unit_feature_stats, write_feature_tables
from pipeline.store.corpus import CorpusConfig
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
        sae_feature_stats(store_path, "layer_2", sae, top_k=3),
        store_path,
        "layer_2",
        sae,
        tmp_path / "t",
    )
    features = pd.read_parquet(out / "features.parquet")
    examples = pd.read_parquet(out / "examples.parquet").query("kind == 'top'")
    assert len(features) == 96 and features.frequency.between(0, 1).all()
    tokens = ActivationStore.open(store_path).tokens().to_pandas().set_index("row")
    first = examples.iloc[0]
    assert first.token == tokens.loc[first.row, "token"]  # the raw piece, e.g. 'Ġan'
    # The context is decoded text: marks removed, it is the tokenizer's decoding of the
    # window's tokens around the example, and the marked text is the example's own.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        ActivationStore.open(store_path).meta["fingerprint"]["model"]
    )
    around = tokens[(tokens.window == tokens.loc[first.row, "window"])]
    around = around[abs(around.index - first.row) <= 8]
    decoded = tokenizer.decode(around.token_id.tolist(), clean_up_tokenization_spaces=False)
    assert first.context.replace("[[", "").replace("]]", "") == decoded
    assert f"[[{first.token_text}]]" in first.context and "Ġ" not in first.context
    assert first.token_text == tokenizer.convert_tokens_to_string([first.token])
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


def test_a_small_store_without_a_cluster_is_computed_here_saying_so(
    store_and_sae, tmp_path, capsys, monkeypatch
):
    import ray

    from jobs.sae_stats import main as stats_main

    store_path, sae_dir, _ = store_and_sae
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = ["--store", str(store_path), "--hook", "layer_2", "--sae", str(sae_dir)]
    assert stats_main([*args, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert (
        "no cluster given (RAY_ADDRESS unset) and 6 units to read: computing in this process" in err
    )
    assert "progress: 2800/2800 tokens (100.0%)" in err  # stderr is not a terminal: lines
    assert not ray.is_initialized()


def test_examples_from_a_duplicated_passage_are_listed_once(tiny_gpt2_path, tmp_path):
    from tests.helpers import capture_config, pydoc_texts

    texts = [t[:400] for t in pydoc_texts(6)[2:5]]
    corpus = tmp_path / "twice.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts + texts))
    config = capture_config(
        tiny_gpt2_path,
        tmp_path / "store",
        hooks=("layer_2",),
        mode="document",
        max_tokens=None,
        corpus=CorpusConfig(kind="jsonl", path=str(corpus)),
    )
    capture(config, progress=False)
    torch.manual_seed(0)
    sae = TopKSae(n_latents=32, n_inputs=64, k=4)
    stats = sae_feature_stats(tmp_path / "store", "layer_2", sae, top_k=8)

    def examples(dedupe: bool):
        out = write_feature_tables(
            stats,
            tmp_path / "store",
            "layer_2",
            sae,
            tmp_path / f"t{dedupe}",
            top_k=4,
            dedupe=dedupe,
        )
        return pd.read_parquet(out / "examples.parquet")

    kept, deduped = examples(False), examples(True)
    assert kept.duplicated(["kind", "latent", "context"]).any(), "the corpus repeats passages"
    assert not deduped.duplicated(["kind", "latent", "context"]).any()
    assert set(deduped.kind) == {"top", "sample"}
    kept, deduped = kept.query("kind == 'top'"), deduped.query("kind == 'top'")
    assert (deduped.groupby("latent").size() <= 4).all()
    assert (deduped.groupby("latent")["rank"].apply(lambda r: list(r) == list(range(len(r))))).all()
    strongest = kept[kept["rank"] == 0].set_index("latent").activation.sort_index()
    first = deduped[deduped["rank"] == 0].set_index("latent").activation.sort_index()
    np.testing.assert_array_equal(first.index, strongest.index)
    np.testing.assert_array_equal(first.to_numpy(), strongest.to_numpy())


def test_histograms_and_samples_equal_brute_force(store_and_sae):
    from pipeline.stats.features import ACTIVATION_BIN_EDGES, activation_bins

    store_path, _, sae = store_and_sae
    stats = sae_feature_stats(store_path, "layer_2", sae, top_k=3, samples=6)
    codes_NF = brute_force(store_path, sae)
    fired_NF = codes_NF > 0
    assert torch.equal(stats.l0_hist, torch.bincount(fired_NF.sum(1)))
    for latent in range(96):
        fired = codes_NF[:, latent][fired_NF[:, latent]].numpy()
        expected = np.bincount(activation_bins(fired), minlength=len(ACTIVATION_BIN_EDGES) - 1)
        np.testing.assert_array_equal(stats.hist_FB[latent].numpy(), expected)
        sampled = [r for r in stats.samples.row_ids()[latent].tolist() if r >= 0]
        assert len(sampled) == min(6, len(fired)) and len(set(sampled)) == len(sampled)
        assert fired_NF[sampled, latent].all(), "a sample is a token where the latent fired"
    # The sample is a function of the data, not of how units were grouped.
    store = ActivationStore.open(store_path)
    parts = [unit_feature_stats(store, "layer_2", sae, u, 3, 6) for u in range(store.num_units)]
    regrouped = reduce(FeatureStats.merge, reversed(parts))
    assert torch.equal(regrouped.samples.row_ids(), stats.samples.row_ids())
    assert torch.equal(regrouped.hist_FB, stats.hist_FB)


def test_contexts_carry_the_latent_on_every_token(store_and_sae, tmp_path):
    store_path, _, sae = store_and_sae
    stats = sae_feature_stats(store_path, "layer_2", sae, top_k=3, samples=4)
    out = write_feature_tables(stats, store_path, "layer_2", sae, tmp_path / "t", context=5)
    examples = pd.read_parquet(out / "examples.parquet")
    codes_NF = brute_force(store_path, sae)
    tokens = ActivationStore.open(store_path).tokens().to_pandas().set_index("row")
    assert set(examples.kind) == {"top", "sample"}
    for e in examples.itertuples():
        window = tokens[tokens.window == tokens.loc[e.row, "window"]]
        rows = [r for r in window.index if abs(r - e.row) <= 5]
        assert len(e.context_tokens) == len(e.context_activations) == len(rows)
        assert rows[e.context_index] == e.row
        expected = codes_NF[rows, e.latent].clamp(min=0).numpy()
        np.testing.assert_allclose(e.context_activations, expected, rtol=1e-5, atol=1e-6)
        assert e.activation == pytest.approx(float(codes_NF[e.row, e.latent]), rel=1e-5)
        assert e.context_tokens[e.context_index] == e.token_text
        assert (
            "".join(e.context_tokens).strip()
            == e.context.replace("[[", "").replace("]]", "").strip()
        )
    document = json.loads((out / "stats.json").read_text())
    assert document["num_tokens"] == 2800 and document["hook"] == "layer_2"
    assert document["l0_histogram"] == stats.l0_hist.tolist()
    assert document["dead_count"] == int((codes_NF > 0).sum(0).eq(0).sum())


def test_output_tokens_are_the_decoder_directions_through_the_unembedding(store_and_sae, tmp_path):
    from pipeline import LanguageModel

    store_path, _, sae = store_and_sae
    stats = sae_feature_stats(store_path, "layer_2", sae, top_k=2, samples=2)
    out = write_feature_tables(stats, store_path, "layer_2", sae, tmp_path / "t", context=2)
    logits = pd.read_parquet(out / "logits.parquet")
    lm = LanguageModel.from_pretrained(
        ActivationStore.open(store_path).meta["fingerprint"]["model"]
    )
    W_U = lm.model.lm_head.weight.detach() * lm.model.transformer.ln_f.weight.detach()
    with torch.no_grad():
        direct_FV = sae.W_dec.detach() @ W_U.T
    for latent in (0, 17, 95):
        row = logits[logits.latent == latent]
        promoted = row[row.direction == "promoted"].sort_values("rank")
        suppressed = row[row.direction == "suppressed"].sort_values("rank")
        assert promoted.token_id.tolist() == direct_FV[latent].topk(10).indices.tolist()
        assert suppressed.token_id.tolist() == (-direct_FV[latent]).topk(10).indices.tolist()
        np.testing.assert_allclose(
            promoted.logit, direct_FV[latent].topk(10).values.numpy(), rtol=1e-4, atol=1e-5
        )
    assert "final norm" in json.loads((out / "stats.json").read_text())["output_tokens"]
