"""SAE folders on disk: our round trip and SAELens-style folders written by hand."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from pipeline.sae import JumpReluSae, ReluSae, TopKSae, load_sae


def random_sae(cls, **kwargs):
    torch.manual_seed(0)
    sae = cls(96, 16, **kwargs)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
        if isinstance(sae, JumpReluSae):
            sae.threshold.uniform_(0, 0.5)
    return sae


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(TopKSae, {"k": 6}), (ReluSae, {}), (JumpReluSae, {"apply_b_dec_to_input": False})],
)
def test_save_then_load_reproduces_codes_exactly(tmp_path, cls, kwargs):
    sae = random_sae(cls, **kwargs)
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is cls and loaded.config == sae.config and loaded.dtype == sae.dtype
    x = torch.randn(50, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
        assert torch.equal(loaded.forward(x), sae.forward(x))


def test_saved_folder_is_safetensors_and_json_only(tmp_path):
    random_sae(TopKSae, k=6).save(tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "cfg.json",
        "sae_weights.safetensors",
    ]
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"]) == ("topk", 16, 96, 6)


def test_bfloat16_sae_round_trips_in_its_dtype(tmp_path):
    sae = random_sae(TopKSae, k=6).to(torch.bfloat16)
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.dtype == torch.bfloat16
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), sae.state_dict().values(), strict=True)
    )


def write_saelens_folder(path, cfg: dict, tensors: dict) -> None:
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae_weights.safetensors"))


def saelens_tensors(d_in: int, d_sae: int, jumprelu: bool = False) -> dict:
    generator = torch.Generator().manual_seed(1)
    tensors = {
        "W_enc": torch.randn(d_in, d_sae, generator=generator) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=generator) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=generator) / d_in**0.5,
        "b_dec": torch.randn(d_in, generator=generator) * 0.1,
    }
    if jumprelu:
        tensors["threshold"] = torch.rand(d_sae, generator=generator) * 0.3
    return tensors


def test_saelens_topk_folder_loads_and_encodes_like_the_formula(tmp_path):
    t = saelens_tensors(12, 40)
    cfg = {
        "architecture": "topk",
        "d_in": 12,
        "d_sae": 40,
        "activation_fn_kwargs": {"k": 5},
        "dtype": "float32",
    }
    write_saelens_folder(tmp_path / "sae", cfg, t)
    sae = load_sae(tmp_path / "sae")
    assert isinstance(sae, TopKSae) and sae.k == 5
    x = torch.randn(30, 12)
    pre = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    top = pre.topk(5, dim=1)
    expected = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), expected)
        torch.testing.assert_close(sae.decode(expected), expected @ t["W_dec"] + t["b_dec"])
    sae.save(tmp_path / "again")
    with torch.no_grad():
        assert torch.equal(load_sae(tmp_path / "again").encode(x), sae.encode(x))


def test_saelens_jumprelu_folder_without_b_dec_on_input(tmp_path):
    t = saelens_tensors(12, 40, jumprelu=True)
    cfg = {"architecture": "jumprelu", "d_in": 12, "d_sae": 40, "apply_b_dec_to_input": False}
    write_saelens_folder(tmp_path / "sae", cfg, t)
    sae = load_sae(tmp_path / "sae")
    assert isinstance(sae, JumpReluSae)
    x = torch.randn(30, 12)
    pre = x @ t["W_enc"] + t["b_enc"]
    expected = torch.relu(pre) * (pre > t["threshold"])
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), expected)


def test_saelens_standard_folder_is_a_relu_sae(tmp_path):
    t = saelens_tensors(12, 40)
    write_saelens_folder(tmp_path / "sae", {"architecture": "standard", "d_in": 12, "d_sae": 40}, t)
    sae = load_sae(tmp_path / "sae")
    x = torch.randn(30, 12)
    with torch.no_grad():
        torch.testing.assert_close(
            sae.encode(x), torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
        )


def test_the_loaded_class_follows_the_folder_s_architecture(tmp_path):
    for cls, kwargs in ((ReluSae, {}), (TopKSae, {"k": 4}), (JumpReluSae, {})):
        random_sae(cls, **kwargs).save(tmp_path / cls.__name__)
        assert type(load_sae(tmp_path / cls.__name__)) is cls


def test_unsupported_or_broken_folders_are_clear_errors(tmp_path):
    t = saelens_tensors(12, 40)
    write_saelens_folder(
        tmp_path / "norm",
        {"d_in": 12, "d_sae": 40, "normalize_activations": "expected_average_only_in"},
        t,
    )
    with pytest.raises(ValueError, match="normalize_activations"):
        load_sae(tmp_path / "norm")
    write_saelens_folder(tmp_path / "shape", {"d_in": 13, "d_sae": 40}, t)
    with pytest.raises(ValueError, match=r"W_enc.*\(12, 40\).*\(13, 40\)"):
        load_sae(tmp_path / "shape")
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path / "missing")
