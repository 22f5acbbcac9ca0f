"""SAE evaluation over a store: metrics equal brute force, replay equals a hand-run model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import LanguageModel, ReluSae, TopKSae
from pipeline.capture import capture
from pipeline.stats.eval_replay import evaluate_sae
from pipeline.store.reader import ActivationStore
from tests.helpers import capture_config

REPO = Path(__file__).resolve().parents[2]
HOOK = "layer_2"


@pytest.fixture(scope="module")
def store_and_sae(tiny_gpt2_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("sae-eval")
    capture(capture_config(tiny_gpt2_path, root / "store", hooks=(HOOK,), max_tokens=1500))
    torch.manual_seed(0)
    sae = TopKSae(n_latents=96, n_inputs=64, k=4)
    sae.save(root / "sae")
    return root / "store", root / "sae", sae


@pytest.fixture(scope="module")
def sums(store_and_sae):
    store_path, _, sae = store_and_sae
    return evaluate_sae(store_path, HOOK, sae, batch_size=3)


def identity_sae(width: int) -> ReluSae:
    """relu(x) - relu(-x) = x: a ReLU SAE that reconstructs every input exactly."""
    sae = ReluSae(n_latents=2 * width, n_inputs=width)
    eye = torch.eye(width)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_activation_metrics_equal_brute_force(store_and_sae, sums):
    store_path, _, sae = store_and_sae
    x = torch.from_numpy(ActivationStore.open(store_path).read(HOOK)).double()
    with torch.no_grad():
        codes = sae.encode(x.float())
        x_hat = sae.decode(codes).double()
    metrics = sums.metrics()
    fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    l0_N = (codes > 0).sum(1)
    frequency_F = (codes > 0).double().mean(0)
    assert metrics["num_tokens"] == 1500
    assert metrics["fve"] == pytest.approx(float(fve), rel=1e-9)
    assert metrics["mse"] == pytest.approx(float(((x - x_hat) ** 2).mean()), rel=1e-9)
    assert metrics["l0"] == pytest.approx(float(l0_N.double().mean()), rel=1e-12)
    assert metrics["l0_histogram"] == torch.bincount(l0_N).tolist()
    assert metrics["dead_latents"] == torch.nonzero(frequency_F == 0).flatten().tolist()
    assert metrics["dense_latents"] == torch.nonzero(frequency_F > 0.1).flatten().tolist()
    latents = sums.latents_frame()
    fired = codes > 0
    mean_active = torch.where(fired, codes, 0).sum(0) / fired.sum(0).clamp(min=1)
    np.testing.assert_allclose(latents.frequency, frequency_F.numpy())
    alive = fired.any(0).numpy()
    np.testing.assert_allclose(latents.mean_active[alive], mean_active.numpy()[alive], rtol=1e-5)


def hand_replay(model_path, store_path, sae: torch.nn.Module | None, ablate: bool):
    """Per-window losses and KLs with a plain forward hook replacing block 2's output."""
    lm = LanguageModel.from_pretrained(model_path)
    tokens = ActivationStore.open(store_path).tokens().to_pandas()
    block = lm.model.transformer.h[2]

    def replace(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        with torch.no_grad():
            new = torch.zeros_like(hidden) if ablate else sae(hidden)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    losses, kls = [], []
    for _, window in tokens.groupby("window", sort=True):
        ids = torch.tensor(window.token_id.to_numpy(), dtype=torch.long)[None]
        doc = window.doc_id.to_numpy()
        with torch.no_grad():
            clean = torch.log_softmax(lm.model(ids).logits[0].float(), -1)
            handle = block.register_forward_hook(replace)
            try:
                other = torch.log_softmax(lm.model(ids).logits[0].float(), -1)
            finally:
                handle.remove()
        same = torch.from_numpy(doc[1:] == doc[:-1])
        nll_clean = -clean[:-1].gather(1, ids[0, 1:, None]).squeeze(1)
        nll_other = -other[:-1].gather(1, ids[0, 1:, None]).squeeze(1)
        losses.append(torch.stack([nll_clean[same], nll_other[same]], 1))
        kls.append((clean.exp() * (clean - other)).sum(-1))
    loss = torch.cat(losses).double().mean(0)
    return float(loss[0]), float(loss[1]), float(torch.cat(kls).double().mean())


def test_replay_losses_and_kl_equal_a_hand_run(tiny_gpt2_path, store_and_sae, sums):
    store_path, _, sae = store_and_sae
    metrics = sums.metrics()
    clean, spliced, kl_spliced = hand_replay(tiny_gpt2_path, store_path, sae, ablate=False)
    _, zero, kl_zero = hand_replay(tiny_gpt2_path, store_path, None, ablate=True)
    assert metrics["ce_loss_clean"] == pytest.approx(clean, rel=1e-5)
    assert metrics["ce_loss_spliced"] == pytest.approx(spliced, rel=1e-5)
    assert metrics["ce_loss_zero"] == pytest.approx(zero, rel=1e-5)
    assert metrics["kl_spliced"] == pytest.approx(kl_spliced, rel=1e-4, abs=1e-7)
    assert metrics["kl_zero"] == pytest.approx(kl_zero, rel=1e-4, abs=1e-7)
    recovered = (zero - spliced) / (zero - clean)
    assert metrics["ce_loss_recovered"] == pytest.approx(recovered, rel=1e-3)
    assert metrics["num_windows"] == ActivationStore.open(store_path).meta["num_windows"]


def test_identity_sae_recovers_all_loss(store_and_sae):
    store_path, _, _ = store_and_sae
    metrics = evaluate_sae(store_path, HOOK, identity_sae(64), max_units=1).metrics()
    assert metrics["fve"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["ce_loss_spliced"] == pytest.approx(metrics["ce_loss_clean"], abs=1e-5)
    assert metrics["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["num_windows"] > 0


def test_encoder_replay_reports_hidden_state_cosines(minilm_path, tmp_path):
    store_path = tmp_path / "store"
    capture(capture_config(minilm_path, store_path, hooks=("layer_3",), max_tokens=300))
    metrics = evaluate_sae(store_path, "layer_3", identity_sae(384), max_units=1).metrics()
    assert "ce_loss_clean" not in metrics
    assert metrics["cos_spliced"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["cos_zero"] < 0.99


def test_ray_and_in_process_agree(store_and_sae, ray_cluster):
    from pipeline.distributed.eval import evaluate_sae_on_ray

    store_path, sae_dir, _ = store_and_sae
    on_ray = evaluate_sae_on_ray(store_path, HOOK, sae_dir, max_units=2, num_tasks=2).metrics()
    here = evaluate_sae(store_path, HOOK, sae_dir, max_units=2).metrics()
    assert on_ray.keys() == here.keys()
    for key, value in here.items():
        if isinstance(value, float):
            assert on_ray[key] == pytest.approx(value, rel=1e-9), key
        else:
            assert on_ray[key] == value, key


def run_job(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.eval_sae", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_job_writes_files_and_prints_the_summary(store_and_sae, tmp_path):
    store_path, sae_dir, _ = store_and_sae
    out = tmp_path / "eval"
    done = run_job(
        "--store",
        store_path,
        "--hook",
        HOOK,
        "--sae",
        sae_dir,
        "--out",
        out,
        "--no-ray",
        "--max-units",
        1,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "eval.json").read_text())
    assert document["hook"] == HOOK and document["store"] == str(store_path.resolve())
    assert document["replay_units"] == 1
    assert len(pd.read_parquet(out / "latents.parquet")) == 96
    line = done.stdout.splitlines()[0]
    assert line.startswith(f"FVE {document['fve']:.3f}  L0 4.0  dead ")
    assert "CE recovered" in line and "KL" in line


def test_the_job_shows_what_the_sae_was_trained_on(store_and_sae, tmp_path):
    store_path, sae_dir, _ = store_and_sae
    sae = tmp_path / "sae"
    shutil.copytree(sae_dir, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    trained = {"model": "tiny", "hook": HOOK, "store": str(store_path), "rows_trained": 123}
    cfg["metadata"] = {**(cfg.get("metadata") or {}), **trained}
    (sae / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "eval"
    args = ["--store", store_path, "--hook", HOOK, "--sae", sae, "--out", out, "--no-ray"]
    done = run_job(*args, "--max-units", 0)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "eval.json").read_text())["sae_trained_on"] == trained
    assert f"SAE trained on: store {store_path}, hook {HOOK}, model tiny, 123 rows" in done.stdout


def test_job_refuses_an_unfinished_store_in_one_line(store_and_sae, tmp_path):
    store_path, sae_dir, _ = store_and_sae
    unfinished = tmp_path / "store"
    shutil.copytree(store_path, unfinished)
    (unfinished / "_SUCCESS").unlink()
    next(iter(sorted((unfinished / "units").iterdir()))).unlink()
    out = tmp_path / "eval"
    done = run_job(
        "--store", unfinished, "--hook", HOOK, "--sae", sae_dir, "--out", out, "--no-ray"
    )
    assert done.returncode == 2 and not out.exists()
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unfinished" in done.stderr and "--partial" in done.stderr


def test_training_evaluates_ce_loss_recovered_at_each_checkpoint(store_and_sae, tmp_path, capsys):
    from jobs.train_sae import main as train_main
    from pipeline.sae import load_sae
    from pipeline.stats.eval_replay import eval_units

    store_path, _, _ = store_and_sae
    out = tmp_path / "run"
    args = ["--store", str(store_path), "--hook", HOOK, "--n-latents", "32", "--k", "4"]
    args += ["--batch-size", "64", "--steps", "10", "--checkpoint-every", "5", "--quiet"]
    assert train_main([*args, "--eval-units", "1", "--out", str(out)]) == 0
    logged = [
        json.loads(line) for line in (out / "checkpoint_evals.jsonl").read_text().splitlines()
    ]
    assert [entry["step"] for entry in logged] == [5, 10], "each checkpoint once, the last too"
    assert all(entry["units"] == 1 and entry["ce_loss_recovered"] is not None for entry in logged)
    first_unit = ActivationStore.open(store_path).data_units()[:1]
    direct = eval_units(store_path, HOOK, load_sae(out / "sae"), first_unit, first_unit)
    assert logged[-1]["ce_loss_recovered"] == pytest.approx(
        direct.metrics()["ce_loss_recovered"], rel=1e-6
    )
    err = capsys.readouterr().err
    assert "step 5 eval on 1 units: FVE" in err and "CE recovered" in err
