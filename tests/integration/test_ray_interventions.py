"""Interventions on Ray actors: the same effects as one process, through an actor's death."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pipeline.capture import capture
from pipeline.interventions import run_interventions, spec_from_dict
from pipeline.sae import TopKSae
from tests.helpers import capture_config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def store(tiny_gpt2_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-interventions")
    capture(capture_config(tiny_gpt2_path, root / "store", max_tokens=2500), progress=False)
    torch.manual_seed(0)
    TopKSae(n_latents=256, n_inputs=64, k=8).save(root / "sae")
    return root


def spec(store, out, **extra):
    return spec_from_dict(
        {
            "store": str(store / "store"),
            "out": str(store / out),
            "steps": [
                {
                    "name": "boost",
                    "layer": "layer_1",
                    "sae": str(store / "sae"),
                    "concepts": {3: {"set": 4.0}},
                },
                {"name": "half", "layer": "layer_2", "scale": 0.5},
            ],
            "track": [{"name": "t", "layer": "layer_2", "sae": str(store / "sae"), "latents": [1]}],
            "ray": {"num_workers": 2, "num_cpus_per_worker": 0.5},
            "torch_threads": 1,
            **extra,
        }
    )


def effects(out) -> pd.DataFrame:
    return pd.read_parquet(out / "effects").sort_values(["stage", "row"]).reset_index(drop=True)


def test_two_actors_write_the_effects_one_process_writes(ray_cluster, store):
    from pipeline.distributed.interventions import run_interventions_on_ray

    remote = run_interventions_on_ray(spec(store, "ray"), progress=False)
    local = run_interventions(spec(store, "local"), progress=False)
    assert remote.units_computed == local.units_computed == 5
    assert effects(store / "ray").equals(effects(store / "local"))
    pd.testing.assert_frame_equal(remote.summary, local.summary)
    workers = {
        json.loads(p.read_text())["attempt"]["worker"]
        for p in (store / "ray" / "units").glob("*.json")
    }
    assert workers == {"w0", "w1"}


def test_a_killed_actor_is_replaced_and_its_unit_recomputed(
    ray_cluster, store, monkeypatch, tmp_path
):
    from pipeline.distributed.interventions import run_interventions_on_ray

    once = tmp_path / "killed-once"
    monkeypatch.setenv("PIPELINE_FAULTS", json.dumps({"kill_unit": 2, "once": str(once)}))
    result = run_interventions_on_ray(spec(store, "killed"), progress=False)
    out = store / "killed"
    assert once.exists()
    record = json.loads((out / "units" / "unit-00002.json").read_text())
    assert record["attempt"]["attempt"] == 1, "unit 2 ran once more after its actor died"
    assert result.units_computed == 5
    clean = run_interventions(spec(store, "killed-clean"), progress=False)
    assert clean.units_computed == 5
    assert effects(out).equals(effects(store / "killed-clean"))


def test_a_gpu_request_on_a_cluster_without_gpus_fails_at_once(ray_cluster, store):
    from pipeline.distributed.interventions import run_interventions_on_ray

    with pytest.raises(ValueError, match="has 0 GPUs"):
        run_interventions_on_ray(
            spec(
                store,
                "gpu",
                ray={"num_workers": 2, "num_cpus_per_worker": 0.5, "num_gpus_per_worker": 1},
            ),
            progress=False,
        )
    assert not (store / "gpu").exists()


def test_a_rerun_on_ray_recomputes_a_damaged_unit(ray_cluster, store, capsys):
    from pipeline.distributed.interventions import run_interventions_on_ray

    first = run_interventions_on_ray(spec(store, "damaged", max_units=2), progress=False)
    assert first.units_computed == 2
    out = store / "damaged"
    table = effects(out)
    (out / "effects" / "unit-00001.parquet").unlink()
    again = run_interventions_on_ray(
        spec(store, "damaged", max_units=2), progress=False, verify=True
    )
    assert "unit 1: effects file effects/unit-00001.parquet is missing; recomputing" in (
        capsys.readouterr().err
    )
    assert again.units_computed == 1 and again.units_damaged == 1
    assert effects(out).equals(table)
