"""Intervention specs: YAML to checked steps, with errors that say what to change."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.interventions import effects, load_spec, spec_from_dict


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
        ([{"layer": "l"}], {}, "exactly one of"),
        ([{"scale": 2}], {}, "needs a layer"),
        ([{"layer": "l", "ablate": "median"}], {}, "'zero' or 'mean'"),
        ([{"layer": "l", "scale": 2, "coefficient": 3}], {}, r"\['coefficient'\] do not apply"),
        ([{"layer": "l", "add": [1, 2]}], {}, "a direction is"),
        ([{"layer": "l", "add": {"sae": "x", "latent": 1, "vector": "y"}}], {}, "a direction is"),
        ([{"layer": "l", "scale": 2}], {"colour": 1}, r"unknown keys \['colour'\]"),
        (
            [{"name": "a", "layer": "l", "scale": 2}, {"name": "a", "layer": "m", "scale": 1}],
            {},
            "unique",
        ),
        ([{"layer": "l", "scale": 2}], {"batch_size": 0}, "batch_size"),
        ([{"layer": "l", "sae": "/no/such/sae", "splice": True}], {}, "does not exist"),
        ([{"layer": "l", "scale": 2, "positions": [0, -1]}], {}, "positions must be"),
        ([{"layer": "l", "scale": 2, "positions": 3}], {}, "positions must be"),
    ],
)
def test_bad_specs_are_errors_that_name_the_problem(tmp_path, steps, extra, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict(base(tmp_path, steps, **extra))


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
        assert load_config(path).hooks


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
