"""Intervention specs: YAML to checked steps, with errors that say what to change."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from pipeline.interventions import effects, load_spec, spec_from_dict
from pipeline.interventions.spec import check_latents, check_positions
from pipeline.ray_config import RAY_KEYS, RayConfig


def base(tmp_path, steps, **extra):
    return {"store": str(tmp_path / "s"), "out": str(tmp_path / "o"), "steps": steps, **extra}


def test_yaml_and_overrides_make_a_cascade_with_named_stages(tmp_path):
    (tmp_path / "sae").mkdir()
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"store: {tmp_path}/s\nout: o\nsteps:\n"
        f"  - {{name: boost, layer: layer_1, sae: {tmp_path}/sae, concepts: {{42: {{scale: 4}}, 7: {{set: 0}}}}}}\n"
        "  - {layer: layer_2, scale: 0.5, positions: [0]}\n"
    )
    spec = load_spec(path, ["batch_size=2", "cumulative=true"])
    assert spec.batch_size == 2
    assert spec.out == str(Path("o").resolve()), "relative paths are fixed before the job starts"
    boost, scale = spec.steps
    assert boost.concepts == ((7, "set", 0.0), (42, "scale", 4.0))
    assert scale.name == "scale@layer_2" and scale.factor == 0.5 and scale.positions == (0,)
    assert spec.stage_names == ["boost", "boost+scale@layer_2"]
    assert spec.stage_sizes == [1, 2]
    final = spec_from_dict({**base(tmp_path, [{"layer": "l", "scale": 1}]), "cumulative": False})
    assert final.stage_sizes == [1]


@pytest.mark.parametrize(
    ("steps", "extra", "message"),
    [
        ([], {}, "needs 'steps'"),
        ({"layer": "l", "scale": 2}, {}, r"steps must be a list .* got \{.*\} \(dict\)"),
        (
            [{"layer": "l", "scale": 2}],
            {"colour": 1},
            r"intervention spec: unknown keys \['colour'\]",
        ),
        (
            [{"layer": "l", "scale": 2}],
            {"batch_size": 0},
            r"batch_size must be an integer >= 1, got 0",
        ),
        ([{"layer": "l", "scale": 2}], {"measure": ["l", 3]}, r"measure\[1\] must be a hook name"),
        ([{"layer": "l", "scale": 2}], {"measure": "l, m, l"}, r"measure\[2\]: 'l' is already"),
        ([{"layer": "l", "scale": 2}], {"track": {"layer": "l"}}, "track must be a list"),
        ([{"layer": "l", "scale": 2}], {"store": 5}, r"store must be a path .* got 5 \(int\)"),
    ],
)
def test_bad_specs_are_errors_that_name_the_problem(tmp_path, steps, extra, message):
    values = base(tmp_path, steps, **extra)
    if isinstance(extra.get("store"), int):
        values["store"] = extra["store"]
    with pytest.raises(ValueError, match=message):
        spec_from_dict(values)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", True),
        ("batch_size", 2.0),
        ("max_units", 1.5),
        ("max_units", False),
        ("num_workers", "2"),
        ("max_retries", -1),
        ("torch_threads", 0),
        ("num_cpus_per_worker", True),
        ("num_gpus_per_worker", -1),
        ("cumulative", "yes"),
        ("overwrite", 1),
        ("verify", "true"),
        ("device", 0),
    ],
)
def test_a_bool_is_not_an_int_and_a_float_is_not_an_int(tmp_path, key, value):
    extra = {"ray": {key: value}} if key in RAY_KEYS else {key: value}  # Ray settings: ray:
    with pytest.raises(
        ValueError, match=rf"^{key} must be .*, got {re.escape(repr(value))}( \(|$)"
    ):
        spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}], **extra))


def test_the_ray_section_of_a_spec_makes_its_ray_config(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"store: {tmp_path}/s\nout: o\nsteps:\n  - {{layer: layer_1, scale: 0.5}}\n"
        "ray:\n  num_workers: 3\n  num_cpus_per_worker: 0.5\n  max_retries: 0\n"
    )
    spec = load_spec(path)
    assert spec.ray == RayConfig(num_workers=3, num_cpus_per_worker=0.5, max_retries=0)
    spec = load_spec(path, ["ray.num_gpus_per_worker=1", "ray.num_workers=4"])
    assert spec.ray == RayConfig(
        num_workers=4, num_cpus_per_worker=0.5, num_gpus_per_worker=1, max_retries=0
    )
    default = spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}]))
    assert default.ray == RayConfig() and default.ray.max_retries == 3, "capture's defaults"
    given = RayConfig(num_workers=7)
    assert spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}], ray=given)).ray == given


@pytest.mark.parametrize("key", RAY_KEYS)
def test_a_top_level_ray_setting_in_a_spec_is_refused_naming_its_new_key(tmp_path, key):
    message = f"{key} is a Ray setting: put it under ray: in the YAML, or --set ray.{key}=2"
    with pytest.raises(ValueError) as info:
        spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}], **{key: 2}))
    assert str(info.value) == message
    path = tmp_path / "spec.yaml"
    path.write_text(f"store: {tmp_path}/s\nout: o\nsteps:\n  - {{layer: l, scale: 2}}\n")
    with pytest.raises(ValueError) as info:
        load_spec(path, [f"{key}=2"])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ray", "message"),
    [
        ({"workers": 2}, r"^unknown ray keys \['workers'\]; known keys: num_workers, "),
        (2, r"^ray must be a mapping of Ray settings .* got 2 \(int\)"),
        (
            {"num_gpus_per_worker": "abc"},
            r"^num_gpus_per_worker must be a number >= 0.0, got 'abc'",
        ),
    ],
)
def test_a_bad_ray_section_in_a_spec_is_refused(tmp_path, ray, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}], ray=ray))


def sae_folder(tmp_path) -> str:
    (tmp_path / "sae").mkdir(exist_ok=True)
    return str(tmp_path / "sae")


# Each case is the second step (index 1, named 'bad'), so the message must say which.
STEP_ERRORS = [
    ({"positions": [1.0]}, r"positions\[0\] must be an integer >= 0, got 1\.0 \(float\)"),
    ({"positions": [True]}, r"positions\[0\] must be an integer >= 0, got True \(bool\)"),
    ({"positions": [0, -1]}, r"positions\[1\] must be an integer >= 0, got -1$"),
    ({"positions": 3}, r"positions must be a non-empty list .*got 3 \(int\)"),
    ({"positions": []}, r"positions must be a non-empty list"),
    ({"colour": "red"}, r"unknown keys \['colour'\]; known keys: ablate, add, "),
    ({"scale": True}, r"scale must be a finite number, got True \(bool\)"),
    ({"scale": "half"}, r"scale must be a finite number, got 'half' \(str\)"),
    ({"scale": float("nan")}, r"scale must be a finite number"),
    ({"layer": 3}, r"layer must be a hook name such as 'layer_3', got 3 \(int\)"),
    ({"scale": None, "ablate": "median"}, r"ablate must be 'zero' or 'mean', got 'median'"),
    ({"coefficient": 3}, r"\['coefficient'\] do not apply to a scale step"),
    ({"scale": None, "add": [1, 2]}, r"add: a direction is"),
    ({"scale": None, "add": {"sae": "SAE", "latent": 1.0}}, r"add\.latent must be an integer >= 0"),
    ({"scale": None, "add": {"vector": "/no/v.safetensors"}}, r"add\.vector: .* does not exist"),
    ({"scale": None, "add": {"sae": "SAE", "latent": 1, "colour": 2}}, r"add: unknown keys"),
    ({"scale": None, "sae": "SAE", "splice": "yes"}, r"splice must be true or false"),
    ({"scale": None, "sae": "/no/sae", "splice": True}, r"sae: '/no/sae' does not exist"),
    (
        {"scale": None, "sae": "SAE", "concepts": {1.5: {"set": 1}}},
        r"concepts: a latent index must be an integer >= 0, got 1\.5",
    ),
    (
        {"scale": None, "sae": "SAE", "concepts": {"7": {"set": 1}}},
        r"concepts: a latent index must be an integer >= 0, got '7' \(str\)",
    ),
    ({"scale": None, "sae": "SAE", "concepts": {7: {"set": True}}}, r"concepts\[7\]\.set must be"),
    ({"scale": None, "sae": "SAE", "concepts": {7: {"boost": 2}}}, r"concepts\[7\] must be"),
    ({"scale": None, "sae": "SAE"}, r"an SAE step without concepts or splice changes nothing"),
    ({"name": "a"}, r"the name 'a' is already steps\[0\]'s"),
]


@pytest.mark.parametrize(("change", "message"), STEP_ERRORS)
def test_every_step_error_names_the_step_index_its_name_and_the_key(tmp_path, change, message):
    sae = sae_folder(tmp_path)
    step = {"name": "bad", "layer": "layer_2", "scale": 0.5}
    for key, value in change.items():
        if value is None:
            step.pop(key)
        elif isinstance(value, dict):
            step[key] = {k: (sae if v == "SAE" else v) for k, v in value.items()}
        else:
            step[key] = sae if value == "SAE" else value
    name = step.get("name")
    steps = [{"name": "a", "layer": "layer_1", "scale": 2.0}, step]
    with pytest.raises(ValueError, match=rf"^steps\[1\] \(name '{name}'\): {message}"):
        spec_from_dict(base(tmp_path, steps))


def test_a_step_without_a_name_is_named_by_its_operation_and_layer(tmp_path):
    steps = [{"layer": "layer_1", "scale": 2.0}, {"layer": "layer_2", "ablate": "mean", "x": 1}]
    with pytest.raises(ValueError, match=r"^steps\[1\] \(name 'ablate@layer_2'\): unknown keys"):
        spec_from_dict(base(tmp_path, steps))
    with pytest.raises(ValueError, match=r"^steps\[0\] must have exactly one of"):
        spec_from_dict(base(tmp_path, [{"layer": "l"}]))
    with pytest.raises(ValueError, match=r"^steps\[0\] needs a layer"):
        spec_from_dict(base(tmp_path, [{"scale": 2}]))


@pytest.mark.parametrize(
    ("tracker", "message"),
    [
        ({"latents": [1, 2.0]}, r"latents\[1\] must be an integer >= 0, got 2\.0 \(float\)"),
        ({"latents": []}, r"latents must be a non-empty list"),
        ({"layer": None}, r"needs \['layer'\]"),
        ({"every": 2}, r"unknown keys \['every'\]"),
    ],
)
def test_tracker_errors_name_the_tracker(tmp_path, tracker, message):
    entry = {"name": "t5", "layer": "layer_5", "sae": sae_folder(tmp_path), "latents": [3]}
    entry.update(tracker)
    entry = {k: v for k, v in entry.items() if v is not None}
    values = base(tmp_path, [{"layer": "l", "scale": 2}], track=[entry])
    with pytest.raises(ValueError, match=rf"^track\[0\] \(name 't5'\):? {message}"):
        spec_from_dict(values)


def test_positions_outside_the_stores_windows_are_refused_with_the_allowed_range(tmp_path):
    steps = [
        {"name": "half", "layer": "layer_1", "scale": 0.5, "positions": [0, 127]},
        {"name": "zero", "layer": "layer_2", "ablate": "zero", "positions": [5000]},
    ]
    spec = spec_from_dict(base(tmp_path, steps))
    check_positions(spec, 5001)
    message = (
        "steps[1] (name 'zero'): positions[0] = 5000 is outside the store's 128-token "
        "windows (0..127)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        check_positions(spec, 128)
    with pytest.raises(ValueError, match=re.escape("steps[0] (name 'half'): positions[1] = 127")):
        check_positions(spec, 127)


def test_latents_outside_the_saes_width_are_refused_naming_step_and_key(tmp_path):
    sae = sae_folder(tmp_path)
    concepts = {"name": "boost", "layer": "l", "sae": sae, "concepts": {31: {"set": 1.0}}}
    steer = {"name": "steer", "layer": "l", "add": {"sae": sae, "latent": 40}}
    track = [{"name": "t", "layer": "l", "sae": sae, "latents": [0, 32]}]
    spec = spec_from_dict(base(tmp_path, [concepts, steer], track=track))
    check_latents(spec, lambda path: 64)

    def width(path):
        assert path == sae
        return 32

    with pytest.raises(
        ValueError,
        match=re.escape(
            "steps[1] (name 'steer'): add.latent: latent 40 is outside the SAE's 32 latents (0..31"
        ),
    ):
        check_latents(spec, width)
    boost = dict(concepts, concepts={99: {"scale": 2.0}})
    with pytest.raises(
        ValueError, match=re.escape("steps[0] (name 'boost'): concepts[99]: latent 99")
    ):
        check_latents(spec_from_dict(base(tmp_path, [boost])), width)
    only_track = spec_from_dict(base(tmp_path, [{"layer": "l", "scale": 2}], track=track))
    with pytest.raises(ValueError, match=re.escape("track[0] (name 't'): latents[1]: latent 32")):
        check_latents(only_track, width)


def test_an_sae_width_comes_from_its_cfg_json_and_a_bad_folder_names_the_step(tmp_path):
    from pipeline.interventions.steps import sae_n_latents
    from pipeline.sae import TopKSae

    TopKSae(n_latents=32, n_inputs=16, k=4).save(tmp_path / "sae")
    assert sae_n_latents(str(tmp_path / "sae")) == 32
    (tmp_path / "empty").mkdir()
    step = {"name": "s", "layer": "l", "sae": str(tmp_path / "empty"), "splice": True}
    spec = spec_from_dict(base(tmp_path, [step]))
    with pytest.raises(ValueError, match=r"^steps\[0\] \(name 's'\): sae: .* has no cfg\.json"):
        check_latents(spec, sae_n_latents)


def test_kl_is_zero_for_equal_logits_and_matches_torch():
    logits = torch.randn(2, 5, 11)
    other = logits + torch.randn(2, 5, 11)
    ids, mask = torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)
    baseline = effects.next_token_baseline(logits, ids, mask)
    assert torch.all(effects.next_token_effects(baseline, logits, ids, mask)["kl"] == 0)
    a, b = effects.log_probs(logits), effects.log_probs(other)
    expected = torch.nn.functional.kl_div(b, a, log_target=True, reduction="none").sum(-1)
    got = effects.next_token_effects(baseline, other, ids, mask)["kl"]
    torch.testing.assert_close(got, expected)


def test_reused_vocabulary_buffers_give_the_same_effects_batch_after_batch():
    """The worker computes log-probs into buffers it keeps; a smaller last batch and a
    bfloat16 model must give exactly what fresh tensors give."""
    buffers = effects.VocabBuffers()
    for batch, dtype in ((3, torch.float32), (2, torch.bfloat16), (3, torch.float32)):
        logits = (torch.randn(batch, 6, 13) * 4).to(dtype)
        other = (logits.float() + torch.randn(batch, 6, 13)).to(dtype)
        ids = torch.randint(0, 13, (batch, 6))
        mask = torch.ones(batch, 6, dtype=torch.long)
        mask[-1, 4:] = 0
        fresh = effects.next_token_effects(
            effects.next_token_baseline(logits, ids, mask), other, ids, mask
        )
        base = effects.next_token_baseline(logits, ids, mask, buffers)
        reused = effects.next_token_effects(base, other, ids, mask, buffers)
        assert base.logp_BTV.shape == (batch, 6, 13) and base.logp_BTV.is_contiguous()
        for name, values in fresh.items():
            assert torch.equal(reused[name].nan_to_num(-1), values.nan_to_num(-1)), name


def test_next_token_loss_is_cross_entropy_of_the_following_token_and_nan_at_the_end():
    logits = torch.randn(1, 4, 7)
    ids = torch.tensor([[1, 2, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last position is padding
    loss = effects.next_token_loss(effects.log_probs(logits), ids, mask)
    expected = torch.nn.functional.cross_entropy(logits[0, :2], ids[0, 1:3], reduction="none")
    torch.testing.assert_close(loss[0, :2], expected)
    assert math.isnan(loss[0, 2]) and math.isnan(loss[0, 3])


def test_relative_change_and_cosine():
    base = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    new = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(effects.relative_change(base, new), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(effects.cosine(base, base)[0, 0], torch.tensor(1.0))


def test_every_example_config_in_jobs_configs_loads():
    """Capture configs and intervention specs shipped in jobs/configs stay valid."""
    from pipeline.capture.config_io import load_config

    configs = Path(__file__).resolve().parents[2] / "jobs" / "configs"
    specs = sorted(configs.glob("intervene-*.yaml"))
    assert specs, "the example intervention spec is missing"
    for path in specs:
        spec = load_spec(path)
        assert spec.steps and spec.store
    for path in sorted(set(configs.glob("*.yaml")) - set(specs)):
        config, ray_config = load_config(path)
        assert config.hooks and ray_config.num_workers >= 1


def test_stage_effects_against_a_cached_baseline_equal_the_direct_formulas():
    logits, other = torch.randn(2, 6, 13), torch.randn(2, 6, 13)
    ids, mask = torch.randint(0, 13, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    baseline = effects.next_token_baseline(logits, ids, mask)
    got = effects.next_token_effects(baseline, other, ids, mask)
    a, b = effects.log_probs(logits), effects.log_probs(other)
    torch.testing.assert_close(got["kl"], (a.exp() * (a - b)).sum(-1))
    assert torch.equal(got["top1_agree"], a.argmax(-1) == b.argmax(-1))
    torch.testing.assert_close(got["loss"], effects.next_token_loss(b, ids, mask), equal_nan=True)
    torch.testing.assert_close(
        got["loss_base"], effects.next_token_loss(a, ids, mask), equal_nan=True
    )
