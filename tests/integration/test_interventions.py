"""Stage 2 interventions in one process: effects checked against direct computation."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.capture import capture
from pipeline.interventions import run_interventions, spec_from_dict
from pipeline.sae import TopKSae, load_sae
from pipeline.store.meta import StoreMismatchError
from pipeline.store.output_dir import OutputFolderError
from pipeline.store.reader import ActivationStore
from tests.helpers import capture_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tiny_gpt2_path, tmp_path_factory):
    """A float32 store of layers 1 and 3 (6 units of 512 rows) and an SAE for each."""
    root = tmp_path_factory.mktemp("interventions")
    capture(
        capture_config(tiny_gpt2_path, root / "store", hooks=("layer_1", "layer_3")),
        progress=False,
    )
    for layer, seed in (("layer_1", 1), ("layer_3", 3)):
        torch.manual_seed(seed)
        TopKSae(n_latents=256, n_inputs=64, k=8).save(root / f"sae_{layer}")
    return root


def run(setup, out_name, steps, **extra):
    spec = spec_from_dict(
        {"store": str(setup / "store"), "out": str(setup / out_name), "steps": steps, **extra}
    )
    result = run_interventions(spec, progress=False)
    return result, effects(setup / out_name)


def effects(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "effects").sort_values(["stage", "row"]).reset_index(drop=True)


def test_an_identity_step_has_no_effect(setup):
    result, table = run(setup, "noop", [{"layer": "layer_2", "scale": 1.0}], max_units=2)
    assert len(table) == 1024  # one row per token of the two units, one stage
    assert (table.kl == 0).all() and table.top1_agree.all()
    assert np.array_equal(table.loss.to_numpy(), table.loss_base.to_numpy(), equal_nan=True)
    assert (table.change_layer_2 == 0).all()
    assert result.summary.loc[0, "mean_top1_agree"] == 1.0


def test_kl_top1_and_loss_equal_a_direct_forward_pass(setup, tiny_lm):
    _, table = run(setup, "direct", [{"layer": "layer_2", "scale": 0.3}], max_units=1)
    store = ActivationStore.open(setup / "store")
    window = store.tokens(slice(0, 512)).to_pandas().query("window == 2")
    ids = torch.tensor(window.token_id.to_numpy(), dtype=torch.long)[None]
    from pipeline import FunctionController

    with torch.no_grad():
        base = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0].float(), -1)
        with tiny_lm.layers.hooks(FunctionController("layer_2", lambda x: x * 0.3)):
            new = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0].float(), -1)
    got = table.set_index("row").loc[window.row.to_numpy()]
    kl = (base.exp() * (base - new)).sum(-1)
    np.testing.assert_allclose(got.kl, kl.numpy(), rtol=1e-4, atol=1e-7)
    assert np.array_equal(got.top1_agree, (base.argmax(-1) == new.argmax(-1)).numpy())
    targets = ids[0, 1:]
    np.testing.assert_allclose(
        got.loss_base[:-1], -base[:-1].gather(1, targets[:, None])[:, 0], rtol=1e-5
    )
    np.testing.assert_allclose(
        got.loss[:-1], -new[:-1].gather(1, targets[:, None])[:, 0], rtol=1e-5
    )
    assert np.isnan(got.loss.iloc[-1]), "the last token of a window has no next token"


def test_an_sae_concept_edit_moves_the_layer_by_exactly_its_decoder_column(setup):
    _, table = run(
        setup,
        "concept",
        [{"layer": "layer_1", "sae": str(setup / "sae_layer_1"), "concepts": {5: {"set": 2.0}}}],
        max_units=1,
    )
    store = ActivationStore.open(setup / "store")
    x = torch.from_numpy(store.read("layer_1", slice(0, 512)))
    sae = load_sae(setup / "sae_layer_1")
    z5 = sae.encode(x)[:, 5].detach()
    expected = ((2.0 - z5)[:, None] * sae.W_dec[5].detach()).norm(dim=1) / x.norm(dim=1)
    np.testing.assert_allclose(table.change_layer_1, expected.numpy(), rtol=1e-4)


def test_a_cascade_reports_each_prefix_and_later_steps_see_earlier_ones(setup):
    steps = [
        {"name": "half", "layer": "layer_1", "scale": 0.5},
        {"name": "zero", "layer": "layer_3", "ablate": "zero"},
    ]
    track = [
        {"name": "t3", "layer": "layer_3", "sae": str(setup / "sae_layer_3"), "latents": [0, 7]}
    ]
    result, table = run(
        setup, "cascade", steps, max_units=1, measure=["layer_1", "layer_2", "layer_3"], track=track
    )
    assert list(result.summary.steps) == ["half", "half+zero"]
    first, second = table[table.stage == 1], table[table.stage == 2]
    np.testing.assert_allclose(first.change_layer_1, 0.5, rtol=1e-6)
    assert (first.change_layer_2 > 0).all(), "block 2 reads block 1's halved output"
    np.testing.assert_allclose(second.change_layer_3, 1.0, rtol=1e-6)
    # The tracked SAE reads layer_3 as it leaves the layer: before, the stored activations;
    # after, what the cascade made of them (zeros in stage 2).
    store = ActivationStore.open(setup / "store")
    codes = load_sae(setup / "sae_layer_3").encode(
        torch.from_numpy(store.read("layer_3", slice(0, 512)))
    )
    np.testing.assert_allclose(first.t3_7_base, codes[:, 7].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.t3_7, first.t3_7_base)
    summary = json.loads((setup / "cascade" / "summary.json").read_text())
    assert summary["replay_max_abs_error"] == {"layer_1": 0.0, "layer_3": 0.0}

    _, final_only = run(setup, "final-only", steps, max_units=1, cumulative=False)
    assert set(final_only.stage) == {1} and len(final_only) == 512


def test_positions_limit_a_step_and_mean_ablation_uses_the_store_mean(setup):
    steps = [{"layer": "layer_1", "ablate": "mean", "positions": [0, 3]}]
    _, table = run(setup, "mean", steps, max_units=1)
    store = ActivationStore.open(setup / "store")
    mean = load_file(str(setup / "mean" / "means.safetensors"))["layer_1"]
    np.testing.assert_allclose(mean, store.read("layer_1").mean(0), rtol=1e-5, atol=1e-6)
    touched = table.position.isin([0, 3])
    assert (table.change_layer_1[touched] > 0).all()
    assert (table.change_layer_1[~touched] == 0).all()


def test_splicing_an_sae_costs_its_reconstruction_error(setup):
    steps = [{"layer": "layer_3", "sae": str(setup / "sae_layer_3"), "splice": True}]
    result, table = run(setup, "splice", steps, max_units=1)
    store = ActivationStore.open(setup / "store")
    x = torch.from_numpy(store.read("layer_3", slice(0, 512)))
    sae = load_sae(setup / "sae_layer_3")
    expected = (sae(x).detach() - x).norm(dim=1) / x.norm(dim=1)
    np.testing.assert_allclose(table.change_layer_3, expected.numpy(), rtol=1e-4)
    assert result.summary.loc[0, "mean_loss_change"] != 0


def test_add_and_project_out_a_direction_from_a_file(setup, tmp_path):
    direction = torch.randn(64)
    save_file({"d": direction}, str(tmp_path / "dir.safetensors"))
    vector = {"vector": str(tmp_path / "dir.safetensors"), "key": "d"}
    steps = [
        {"name": "add", "layer": "layer_1", "add": vector, "coefficient": 3.0},
        {"name": "remove", "layer": "layer_1", "project_out": vector},
    ]
    _, table = run(setup, "directions", steps, max_units=1)
    x = torch.from_numpy(ActivationStore.open(setup / "store").read("layer_1", slice(0, 512)))
    np.testing.assert_allclose(
        table[table.stage == 1].change_layer_1, (3.0 / x.norm(dim=1)).numpy(), rtol=1e-4
    )
    unit = direction / direction.norm()
    removed = ((x + 3.0 * unit) @ unit)[:, None] * unit  # what the second step takes away
    expected = (removed - 3.0 * unit).norm(dim=1) / x.norm(dim=1)
    np.testing.assert_allclose(table[table.stage == 2].change_layer_1, expected.numpy(), rtol=1e-3)


def test_a_rerun_resumes_and_a_different_spec_is_refused(setup):
    steps = [{"layer": "layer_2", "scale": 0.5}]
    first, table = run(setup, "resume", steps, max_units=2)
    assert first.units_computed == 2
    again, same = run(setup, "resume", steps, max_units=2)
    assert again.units_computed == 0 and again.units_damaged == 0 and same.equals(table)
    with pytest.raises(StoreMismatchError, match=r"steps.*\n.*pass --overwrite"):
        run(setup, "resume", [{"layer": "layer_2", "scale": 0.6}], max_units=2)
    replaced, _ = run(
        setup, "resume", [{"layer": "layer_2", "scale": 0.6}], max_units=2, overwrite=True
    )
    assert replaced.units_computed == 2


def test_a_killed_run_resumes_to_the_same_effects(setup, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"store: {setup / 'store'}\nout: {tmp_path / 'killed'}\n"
        "max_units: 4\nsteps:\n  - {name: half, layer: layer_1, scale: 0.5}\n"
        "  - {name: zero, layer: layer_2, ablate: zero, positions: [1]}\n"
    )
    command = [sys.executable, "-m", "jobs.intervene", "--spec", str(spec), "--no-ray", "--quiet"]
    fault = json.dumps({"kill_unit": 2, "once": str(tmp_path / "killed-once")})
    killed = subprocess.run(
        command, cwd=REPO, capture_output=True, env={**os.environ, "PIPELINE_FAULTS": fault}
    )
    assert killed.returncode == -signal.SIGKILL
    records = sorted((tmp_path / "killed" / "units").glob("unit-*.json"))
    assert [p.name for p in records] == [f"unit-0000{i}.json" for i in range(2)]
    before = {p.name: p.read_text() for p in records}
    from jobs.inspect import main as inspect

    assert inspect([str(tmp_path / "killed")]) == 1
    assert "unfinished: 2 units committed" in capsys.readouterr().out
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "2 units computed" in finished.stdout
    assert {p.name: p.read_text() for p in records} == before, "committed units were not redone"
    assert inspect([str(tmp_path / "killed")]) == 0
    assert "half+zero" in capsys.readouterr().out
    clean, table = run(
        setup,
        "killed-clean",
        [
            {"name": "half", "layer": "layer_1", "scale": 0.5},
            {"name": "zero", "layer": "layer_2", "ablate": "zero", "positions": [1]},
        ],
        max_units=4,
    )
    assert effects(tmp_path / "killed").equals(table)
    assert not list((tmp_path / "killed").rglob(".*"))


def test_an_encoder_gets_output_similarity_instead_of_next_token_effects(minilm_path, tmp_path):
    capture(
        capture_config(minilm_path, tmp_path / "store", hooks=("layer_1",), max_tokens=400),
        progress=False,
    )
    spec = spec_from_dict(
        {
            "store": str(tmp_path / "store"),
            "out": str(tmp_path / "out"),
            "steps": [{"layer": "layer_1", "scale": 0.0}],
        }
    )
    run_interventions(spec, progress=False)
    table = effects(tmp_path / "out")
    assert {"output_cos", "output_change"} <= set(table.columns) and "kl" not in table.columns
    assert (table.output_cos < 1).all() and (table.change_layer_1 == 1).all()


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"layer": "layer_9", "scale": 2.0}, r"^steps\[0\] .*: layer: .*layer_9.*4 blocks"),
        ({"layer": "layer_1", "ablate": "mean", "scale": 1.0}, "exactly one of"),
        (
            {"layer": "layer_2", "ablate": "mean"},
            r"^steps\[0\] \(name 'ablate@layer_2'\): ablate: mean needs the store's mean "
            r"of layer_2, but the store holds only \['layer_1', 'layer_3'\]",
        ),
        ({"layer": "layer_1", "sae": "/nonexistent/sae", "splice": True}, "does not exist"),
        ({"layer": "layer_1", "scale": 1.0, "colour": "red"}, r"unknown keys \['colour'\]"),
        ({"layer": "layer_1", "sae": "SAE"}, "changes nothing"),
        (
            {"name": "boost", "layer": "layer_1", "sae": "SAE", "concepts": {256: {"set": 1}}},
            r"^steps\[0\] \(name 'boost'\): concepts\[256\]: latent 256 is outside the "
            r"SAE's 256 latents \(0\.\.255",
        ),
        (
            {"name": "steer", "layer": "layer_1", "add": {"sae": "SAE", "latent": 300}},
            r"^steps\[0\] \(name 'steer'\): add\.latent: latent 300 is outside",
        ),
        (
            {"name": "far", "layer": "layer_1", "scale": 0.0, "positions": [0, 64]},
            r"^steps\[0\] \(name 'far'\): positions\[1\] = 64 is outside the store's "
            r"64-token windows \(0\.\.63\)",
        ),
    ],
)
def test_bad_specs_fail_before_any_work_with_the_reason(setup, step, message):
    def with_sae(value):
        if isinstance(value, dict):
            return {k: with_sae(v) for k, v in value.items()}
        return str(setup / "sae_layer_1") if value == "SAE" else value

    with pytest.raises(ValueError, match=message):
        run(setup, "never", [with_sae(step)])
    assert not (setup / "never").exists(), "nothing is written before the checks pass"


def test_unknown_layers_name_the_step_the_measure_entry_and_the_tracker(setup):
    sae = str(setup / "sae_layer_1")
    cases = [
        ({"measure": ["layer_1", "layer_7"]}, r"^measure\[1\]: unknown layer 'layer_7'"),
        (
            {"track": [{"name": "t", "layer": "transformer.h.9", "sae": sae, "latents": [1]}]},
            r"^track\[0\] \(name 't'\): layer: unknown layer 'transformer\.h\.9'; closest "
            r"names: transformer\.h\.",
        ),
        (
            {"track": [{"name": "t", "layer": "layer_1", "sae": sae, "latents": [3, 256]}]},
            r"^track\[0\] \(name 't'\): latents\[1\]: latent 256 is outside",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            run(setup, "never", [{"layer": "layer_1", "scale": 2.0}], **extra)
    assert not (setup / "never").exists()


def test_positions_outside_the_windows_are_refused_before_the_model_is_loaded(setup, monkeypatch):
    from pipeline.interventions import prepare

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the spec was checked")

    monkeypatch.setattr(prepare.LanguageModel, "from_pretrained", no_model)
    steps = [
        {"name": "half", "layer": "layer_1", "scale": 0.5},
        {"name": "zero", "layer": "layer_2", "ablate": "zero", "positions": [5000]},
    ]
    message = (
        "steps[1] (name 'zero'): positions[0] = 5000 is outside the store's 64-token windows "
        "(0..63)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        run(setup, "far", steps)
    assert not (setup / "far").exists()


def test_an_sae_of_the_wrong_width_is_refused(setup, tmp_path):
    TopKSae(n_latents=32, n_inputs=16, k=4).save(tmp_path / "narrow")
    with pytest.raises(ValueError, match="16"):
        run(
            setup, "narrow", [{"layer": "layer_1", "sae": str(tmp_path / "narrow"), "splice": True}]
        )


def test_the_job_runs_without_ray_and_prints_where_the_effects_are(setup, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"store: {setup / 'store'}\nsteps:\n  - {{layer: layer_1, scale: 0.5}}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.intervene",
            "--spec",
            str(spec),
            "--no-ray",
            "--quiet",
            "--out",
            str(tmp_path / "job"),
            "--set",
            "max_units=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'job'}/effects" in done.stdout
    assert (tmp_path / "job" / "_SUCCESS").exists()
    assert pd.read_parquet(tmp_path / "job" / "summary.parquet").loc[0, "tokens"] == 512


# --- the output folder: only this job's files are ever deleted ---------------------------------
STEPS = [{"name": "half", "layer": "layer_1", "scale": 0.5}]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_overwrite_replaces_only_this_jobs_entries(setup):
    out = setup / "owned"
    run(setup, "owned", STEPS, max_units=1)
    (out / "units" / "notes.txt").write_text("inside the job's own units/: the job's to replace")
    replaced, _ = run(setup, "owned", STEPS, max_units=1, overwrite=True)
    assert replaced.units_computed == 1
    assert not (out / "units" / "notes.txt").exists()
    assert {p.name for p in out.iterdir()} == {
        "intervention.json",
        "effects",
        "units",
        "summary.parquet",
        "summary.json",
        "_SUCCESS",
    }


def test_overwrite_refuses_a_folder_with_foreign_files_listing_them_and_keeps_them(setup):
    out = setup / "foreign"
    _, table = run(setup, "foreign", STEPS, max_units=1)
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    before = tree(out)
    with pytest.raises(
        OutputFolderError, match=r"holds files this job did not write \(notes\.txt, plots\)"
    ):
        run(setup, "foreign", STEPS, max_units=1, overwrite=True)
    assert tree(out) == before
    assert (out / "notes.txt").read_text() == "mine"
    assert effects(out).equals(table), "the earlier output is untouched too"


def test_a_folder_of_someone_elses_files_is_refused_before_anything_is_written(setup, tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n")
    spec = spec_from_dict({"store": str(setup / "store"), "out": str(tmp_path), "steps": STEPS})
    with pytest.raises(
        OutputFolderError, match=r"\(results\.csv\); nothing was written or deleted"
    ):
        run_interventions(spec, progress=False)
    assert tree(tmp_path) == ["results.csv"]


def test_our_entries_without_intervention_json_are_refused_unless_overwrite(setup):
    out = setup / "no-spec-json"
    (out / "units").mkdir(parents=True)
    (out / "units" / "unit-00000.json").write_text("{}")
    with pytest.raises(OutputFolderError, match=r"holds units but no intervention\.json"):
        run(setup, "no-spec-json", STEPS, max_units=1)
    assert (out / "units" / "unit-00000.json").read_text() == "{}"
    result, _ = run(setup, "no-spec-json", STEPS, max_units=1, overwrite=True)
    assert result.units_computed == 1


@pytest.mark.parametrize("inside", [False, True], ids=["the-store", "inside-the-store"])
def test_an_activation_store_given_as_out_is_refused_by_name(setup, inside):
    store = setup / "store"
    out = store / "effects" if inside else store
    before = tree(store)
    what = "is inside the activation store" if inside else "is an activation store"
    for overwrite in (False, True):
        values = {"store": str(store), "out": str(out), "steps": STEPS, "overwrite": overwrite}
        with pytest.raises(OutputFolderError, match=what):
            run_interventions(spec_from_dict(values), progress=False)
    assert tree(store) == before


# --- a rerun checks the committed units it skips ----------------------------------------------
@pytest.fixture(scope="module")
def clean(setup):
    """A finished 3-unit output to copy, damage and repair."""
    result, table = run(setup, "clean", STEPS, max_units=3)
    assert result.units_computed == 3
    return setup / "clean", table


def emptied_record(out):
    (out / "units" / "unit-00001.json").write_text("")
    return "commit record units/unit-00001.json is empty"


def deleted_effects(out):
    (out / "effects" / "unit-00001.parquet").unlink()
    return "effects file effects/unit-00001.parquet is missing"


def truncated_effects(out):
    path = out / "effects" / "unit-00001.parquet"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    return f"effects file effects/unit-00001.parquet is {size // 2} bytes, its record says {size}"


def record_of_another_unit(out):
    path = out / "units" / "unit-00001.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "unit": 2}))
    return "commit record units/unit-00001.json is for unit 2"


@pytest.mark.parametrize(
    "damage", [emptied_record, deleted_effects, truncated_effects, record_of_another_unit]
)
def test_a_damaged_unit_is_recomputed_and_only_that_unit(setup, clean, damage, capsys):
    source, table = clean
    out = setup / f"damaged-{damage.__name__}"
    shutil.copytree(source, out)
    problem = damage(out)
    sound = {p.name: p.read_text() for p in (out / "units").glob("*.json") if "01" not in p.name}
    result, repaired = run(setup, out.name, STEPS, max_units=3)
    reported = [line for line in capsys.readouterr().err.splitlines() if line.startswith("unit")]
    assert reported == [f"unit 1: {problem}; recomputing"]
    assert result.units_computed == 1 and result.units_damaged == 1
    assert result.damaged == {1: problem}
    assert repaired.equals(table), "the effects equal a clean run's"
    assert sound == {
        p.name: p.read_text() for p in (out / "units").glob("*.json") if "01" not in p.name
    }, "sound units were not recomputed"
    again, _ = run(setup, out.name, STEPS, max_units=3)
    assert again.units_computed == 0 and again.units_damaged == 0


def test_verify_compares_the_effects_files_sha256(setup, clean, capsys):
    source, table = clean
    out = setup / "tampered"
    shutil.copytree(source, out)
    path = out / "effects" / "unit-00002.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size, other bytes: only the checksum tells
    path.write_bytes(bytes(data))
    trusted, _ = run(setup, "tampered", STEPS, max_units=3)
    assert trusted.units_computed == 0, "without verify, sizes are checked, not contents"
    spec = spec_from_dict(
        {"store": str(setup / "store"), "out": str(out), "steps": STEPS, "max_units": 3}
    )
    checked = run_interventions(spec, progress=False, verify=True)
    message = "effects file effects/unit-00002.parquet does not match the sha256 in its record"
    assert f"unit 2: {message}; recomputing" in capsys.readouterr().err
    assert checked.units_computed == 1 and checked.damaged == {2: message}
    assert effects(out).equals(table)


def test_a_commit_record_holds_its_effects_files_size_and_sha256(clean):
    source, _ = clean
    record = json.loads((source / "units" / "unit-00000.json").read_text())
    data = (source / record["effects"]["file"]).read_bytes()
    assert record["effects"]["bytes"] == len(data)
    assert record["effects"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_rerun_removes_the_hidden_temps_a_killed_run_left_in_its_own_folders(setup, clean):
    source, table = clean
    out = setup / "temps"
    shutil.copytree(source, out)
    temps = [
        out / ".summary.json.123-abc.tmp",
        out / "units" / ".unit-00001.json.123-abc.tmp",
        out / "effects" / ".unit-00001.parquet.123-abc.tmp",
    ]
    for temp in temps:
        temp.write_bytes(b"half")
    result, repaired = run(setup, "temps", STEPS, max_units=3)
    assert result.units_computed == 0 and repaired.equals(table)
    assert not any(temp.exists() for temp in temps)


def test_an_output_path_under_a_file_is_refused_before_the_model_loads(setup, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "effects"
    spec = spec_from_dict({"store": str(setup / "store"), "out": str(out), "steps": STEPS})
    with pytest.raises(OutputFolderError, match=r"is not a writable folder \(.*file is a file\)"):
        run_interventions(spec, progress=False)


def test_the_worker_removes_its_hooks_for_a_bare_block_and_on_close(setup, tiny_lm):
    """A worker's hooks stay on its model while it lives; `hooks_removed()` gives the
    model bare for a block (the benchmark's baseline) and puts them back; `with` removes
    them for good, so a notebook's model is left as it was."""
    from pipeline.interventions.prepare import prepare_run
    from pipeline.interventions.worker import InterventionWorker

    spec = spec_from_dict(
        {
            "store": str(setup / "store"),
            "out": str(setup / "worker-hooks"),
            "steps": [{"layer": "layer_1", "scale": 0.5}],
            "measure": ["layer_3"],
        }
    )
    ids_BT = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        bare = tiny_lm.model(input_ids=ids_BT, use_cache=False).logits
    with InterventionWorker(prepare_run(spec)) as worker:
        lm = worker.lm
        hooked = {hook.id for hook in lm.layers.registered()}
        assert hooked == {c.id for c in worker.controllers} | {
            d.id for d in worker.detectors.values()
        }
        with worker.hooks_removed() as model:
            assert model is lm and lm.layers.registered() == []
            assert torch.equal(model.inference.forward_ids(ids_BT).logits, bare)
        assert {hook.id for hook in lm.layers.registered()} == hooked
        scaled, _ = worker._forward(ids_BT, torch.ones_like(ids_BT), enabled=1)
        assert not torch.equal(scaled, bare)
    assert lm.layers.registered() == []
    assert torch.equal(lm.inference.forward_ids(ids_BT).logits, bare)
