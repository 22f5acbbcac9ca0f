"""Our SAE loader against folders written by SAELens itself (tests/fixtures/saelens).

Every fixture folder was saved by SAELens's own classes, with SAELens's own encode and
decode outputs next to it (see tests/fixtures/saelens/generate.py). Each folder is
either loaded and must give SAELens's numbers, or refused with an error that names the
field and the file. The rest of the file edits copies of those `cfg.json`s to check the
fields one by one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.sae import JumpReluSae, ReluSae, TopKSae, load_sae
from pipeline.sae.io import HONOURED_FIELDS, METADATA_FIELDS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "saelens"

# Our policy per fixture: the class it loads as, or the cfg.json field that refuses it.
LOADS_AS = {
    "standard": ReluSae,
    "standard_no_b_dec_on_input": ReluSae,
    "standard_hook_z": ReluSae,
    "standard_bfloat16": ReluSae,
    "standard_training": ReluSae,
    "topk": TopKSae,
    "topk_rescale": TopKSae,
    "topk_training": TopKSae,
    "topk_training_inference": TopKSae,
    "jumprelu": JumpReluSae,
    "jumprelu_training": JumpReluSae,
    "batchtopk_inference": JumpReluSae,
    "matryoshka_batchtopk_inference": JumpReluSae,
}
REFUSED_BY = {
    "batchtopk_training": ("architecture", "batchtopk"),
    "gated": ("architecture", "gated"),
    "abstopk": ("architecture", "abstopk"),
    "transcoder": ("architecture", "transcoder"),
    "normalize_expected_average_only_in": ("normalize_activations", "expected_average_only_in"),
    "normalize_constant_norm_rescale": ("normalize_activations", "constant_norm_rescale"),
    "normalize_layer_norm": ("normalize_activations", "layer_norm"),
}


def tolerance(dtype: torch.dtype) -> dict:
    # float32: a few ulps (our addmm vs SAELens's matmul + add); bfloat16: about 2 ulps.
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}


def saelens_outputs(folder: Path, sae) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAELens's (input, codes, reconstruction) as rows; hook_z inputs [N, heads, d_head]
    are the heads concatenated, which is what our SAE reads."""
    saved = load_file(str(folder / "saelens_outputs.safetensors"))
    x_ND = saved["sae_in"].reshape(-1, sae.n_inputs).to(sae.dtype)
    codes_NF = saved["feature_acts"].reshape(-1, sae.n_latents)
    x_hat_ND = saved["sae_out"].reshape(-1, sae.n_inputs)
    return x_ND, codes_NF, x_hat_ND


def edited_copy(tmp_path: Path, name: str, drop: tuple[str, ...] = (), **changes) -> Path:
    """A copy of fixture `name` whose cfg.json has `changes` set and `drop` removed."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    for field in drop:
        cfg.pop(field, None)
    cfg.update(changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def refusal(folder: Path, *words: str) -> str:
    """A regex matching an error that names the cfg.json path and each of `words`."""
    return "".join(f"(?=[\\s\\S]*{re.escape(w)})" for w in (str(folder / "cfg.json"), *words))


# --- the fixtures themselves ---------------------------------------------------------------


def test_fixtures_were_written_by_saelens_6():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert manifest["sae_lens_version"].startswith("6.")


def test_every_fixture_folder_has_a_policy():
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LOADS_AS) | set(REFUSED_BY)


def test_every_fixture_we_load_has_saelens_outputs():
    for name in LOADS_AS:
        assert (FIXTURES / name / "saelens_outputs.safetensors").is_file(), name


@pytest.mark.parametrize("name", sorted(LOADS_AS))
def test_saelens_fixture_loads_as_its_architecture(name):
    assert type(load_sae(FIXTURES / name)) is LOADS_AS[name]


@pytest.mark.parametrize("name", sorted(LOADS_AS))
def test_saelens_fixture_encodes_like_saelens(name):
    sae = load_sae(FIXTURES / name)
    x_ND, codes_NF, _ = saelens_outputs(FIXTURES / name, sae)
    with torch.no_grad():
        ours_NF = sae.encode(x_ND)
    assert torch.equal(ours_NF != 0, codes_NF != 0)  # the same latents fire
    torch.testing.assert_close(ours_NF, codes_NF, **tolerance(sae.dtype))


@pytest.mark.parametrize("name", sorted(LOADS_AS))
def test_saelens_fixture_decodes_saelens_codes_like_saelens(name):
    sae = load_sae(FIXTURES / name)
    _, codes_NF, x_hat_ND = saelens_outputs(FIXTURES / name, sae)
    with torch.no_grad():
        ours_ND = sae.decode(codes_NF.to(sae.dtype))
    torch.testing.assert_close(ours_ND, x_hat_ND, **tolerance(sae.dtype))


@pytest.mark.parametrize("name", sorted(LOADS_AS))
def test_saelens_fixture_reconstructs_like_saelens(name):
    sae = load_sae(FIXTURES / name)
    x_ND, _, x_hat_ND = saelens_outputs(FIXTURES / name, sae)
    with torch.no_grad():
        ours_ND = sae.forward(x_ND)
    torch.testing.assert_close(ours_ND, x_hat_ND, **tolerance(sae.dtype))


def test_bfloat16_fixture_loads_in_bfloat16():
    assert load_sae(FIXTURES / "standard_bfloat16").dtype == torch.bfloat16


def test_topk_rescale_fixture_needs_the_rescaling(tmp_path):
    """Guards the fixture: ignoring `rescale_acts_by_decoder_norm` gives other codes."""
    folder = edited_copy(tmp_path, "topk_rescale", rescale_acts_by_decoder_norm=False)
    sae = load_sae(folder)
    x_ND, codes_NF, _ = saelens_outputs(FIXTURES / "topk_rescale", sae)
    with torch.no_grad():
        assert not torch.equal(sae.encode(x_ND) != 0, codes_NF != 0)


def test_folded_rescale_fixture_saves_as_a_plain_topk_sae(tmp_path):
    sae = load_sae(FIXTURES / "topk_rescale")
    sae.save(tmp_path / "again")
    cfg = json.loads((tmp_path / "again" / "cfg.json").read_text())
    x_ND, _, _ = saelens_outputs(FIXTURES / "topk_rescale", sae)
    assert "rescale_acts_by_decoder_norm" not in cfg
    with torch.no_grad():
        assert torch.equal(load_sae(tmp_path / "again").encode(x_ND), sae.encode(x_ND))


@pytest.mark.parametrize("name", sorted(REFUSED_BY))
def test_saelens_fixture_is_refused_naming_field_value_and_file(name):
    field, value = REFUSED_BY[name]
    with pytest.raises(ValueError, match=refusal(FIXTURES / name, field, repr(value))):
        load_sae(FIXTURES / name)


# --- fields one by one, on edited copies ---------------------------------------------------


def test_unknown_field_is_refused_naming_it_and_the_file(tmp_path):
    folder = edited_copy(tmp_path, "topk", rescale_act_by_decoder_norm=True)
    with pytest.raises(
        ValueError,
        match=refusal(folder, "rescale_act_by_decoder_norm=True", "rescale_acts_by_decoder_norm"),
    ):
        load_sae(folder)


def test_unknown_field_under_metadata_is_ignored(tmp_path):
    folder = edited_copy(tmp_path, "topk", metadata={"my_note": "anything"})
    assert type(load_sae(folder)) is TopKSae


def test_field_of_an_architecture_we_refuse_is_unknown_elsewhere(tmp_path):
    folder = edited_copy(tmp_path, "standard", d_out=16)
    with pytest.raises(ValueError, match=refusal(folder, "d_out=16")):
        load_sae(folder)


def test_metadata_fields_do_not_change_the_codes(tmp_path):
    junk = {field: "junk" for field in METADATA_FIELDS if field != "metadata"}
    folder = edited_copy(tmp_path, "topk_rescale", **junk)
    sae = load_sae(folder)
    x_ND, codes_NF, _ = saelens_outputs(FIXTURES / "topk_rescale", sae)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x_ND), codes_NF, **tolerance(sae.dtype))


def test_honoured_and_metadata_fields_do_not_overlap():
    assert not HONOURED_FIELDS & METADATA_FIELDS


def test_saelens_5_topk_config_loads_as_topk(tmp_path):
    """SAELens < 6: architecture standard, activation_fn_str topk, k in the kwargs."""
    folder = edited_copy(
        tmp_path,
        "topk",
        drop=("k", "rescale_acts_by_decoder_norm", "reshape_activations", "metadata"),
        architecture="standard",
        activation_fn_str="topk",
        activation_fn_kwargs={"k": 4},
        normalize_activations=False,
        finetuning_scaling_factor=False,
        hook_point="blocks.0.hook_resid_pre",
        hook_point_layer=0,
    )
    sae = load_sae(folder)
    x_ND, codes_NF, _ = saelens_outputs(FIXTURES / "topk", sae)
    assert type(sae) is TopKSae and sae.k == 4
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x_ND), codes_NF, **tolerance(sae.dtype))


def test_rescale_acts_by_decoder_norm_outside_topk_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "jumprelu", rescale_acts_by_decoder_norm=True)
    with pytest.raises(ValueError, match=refusal(folder, "rescale_acts_by_decoder_norm", "topk")):
        load_sae(folder)


def test_rescale_acts_by_decoder_norm_must_be_a_bool(tmp_path):
    folder = edited_copy(tmp_path, "topk", rescale_acts_by_decoder_norm="yes")
    with pytest.raises(ValueError, match=refusal(folder, "rescale_acts_by_decoder_norm='yes'")):
        load_sae(folder)


def test_rescale_with_a_zero_decoder_row_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "topk_rescale")
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    tensors["W_dec"][3] = 0
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=refusal(folder, "rescale_acts_by_decoder_norm", "zero")):
        load_sae(folder)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, ("normalize_activations=True", "scaling factor")),
        ("covariance_whitening", ("'covariance_whitening'", "fold_activation_whitening")),
        ("something_else", ("'something_else'", "only 'none'")),
    ],
)
def test_normalize_activations_other_than_none_is_refused(tmp_path, value, words):
    folder = edited_copy(tmp_path, "standard", normalize_activations=value)
    with pytest.raises(ValueError, match=refusal(folder, *words)):
        load_sae(folder)


def test_normalize_activations_false_is_none(tmp_path):
    folder = edited_copy(tmp_path, "standard", normalize_activations=False)
    assert type(load_sae(folder)) is ReluSae


def test_reshape_activations_other_than_none_or_hook_z_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "standard", reshape_activations="hook_q")
    with pytest.raises(ValueError, match=refusal(folder, "reshape_activations='hook_q'")):
        load_sae(folder)


def test_activation_function_we_do_not_implement_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "standard", activation_fn="tanh-relu")
    with pytest.raises(ValueError, match=refusal(folder, "activation_fn='tanh-relu'")):
        load_sae(folder)


def test_activation_fn_kwargs_we_do_not_implement_are_refused(tmp_path):
    folder = edited_copy(tmp_path, "topk", activation_fn_kwargs={"k": 4, "sparse": True})
    with pytest.raises(ValueError, match=refusal(folder, "activation_fn_kwargs", "sparse")):
        load_sae(folder)


def test_k_outside_topk_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "standard", k=4)
    with pytest.raises(ValueError, match=refusal(folder, "k=4", "topk")):
        load_sae(folder)


def test_two_different_ks_are_refused(tmp_path):
    folder = edited_copy(tmp_path, "topk", activation_fn_kwargs={"k": 5})
    with pytest.raises(ValueError, match=refusal(folder, "k=4", "k=5")):
        load_sae(folder)


def test_k_out_of_range_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "topk", k=33)
    with pytest.raises(ValueError, match=refusal(folder, "k=33", "d_sae=32")):
        load_sae(folder)


def test_unknown_dtype_is_refused(tmp_path):
    folder = edited_copy(tmp_path, "standard", dtype="int8")
    with pytest.raises(ValueError, match=refusal(folder, "dtype='int8'")):
        load_sae(folder)


def test_apply_b_dec_to_input_must_be_a_bool(tmp_path):
    folder = edited_copy(tmp_path, "standard", apply_b_dec_to_input="false")
    with pytest.raises(ValueError, match=refusal(folder, "apply_b_dec_to_input='false'")):
        load_sae(folder)


def test_training_only_architecture_names_the_inference_save(tmp_path):
    folder = edited_copy(tmp_path, "standard", architecture="matryoshka_batchtopk")
    with pytest.raises(
        ValueError, match=refusal(folder, "matryoshka_batchtopk", "save_inference_model")
    ):
        load_sae(folder)
