"""`lm.attach_sae` puts the SAE on the model's device and leaves its dtype alone.

A CPU machine has one device, so the move itself is checked by recording the `.to` call
an SAE on "another" device receives; the real move runs where CUDA is available.
"""

from __future__ import annotations

import pytest
import torch

from pipeline import LanguageModel
from pipeline.sae import TopKSae

LAYER = "layer_1"


def small_sae(**kwargs) -> TopKSae:
    torch.manual_seed(0)
    return TopKSae(n_latents=128, n_inputs=64, k=4, **kwargs)


def record_to_calls(sae, monkeypatch) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    original = sae.to

    def to(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(sae, "to", to)
    return calls


def test_attach_sae_moves_an_sae_on_another_device_to_the_model_device(tiny_lm, monkeypatch):
    sae = small_sae()
    monkeypatch.setattr(TopKSae, "device", property(lambda self: torch.device("cuda", 7)))
    calls = record_to_calls(sae, monkeypatch)
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    assert calls == [((), {"device": tiny_lm.device})]


def test_attach_sae_leaves_an_sae_on_the_model_device_untouched(tiny_lm, monkeypatch):
    sae = small_sae()
    calls = record_to_calls(sae, monkeypatch)
    weights = sae.W_enc
    tiny_lm.attach_sae(sae, layer_signature=LAYER)
    assert calls == [] and sae.W_enc is weights


def test_attach_sae_keeps_a_float32_sae_float32_on_a_bfloat16_model(tiny_gpt2_path):
    lm = LanguageModel.from_pretrained(tiny_gpt2_path, dtype="bfloat16")
    sae = small_sae()
    lm.attach_sae(sae, layer_signature=LAYER)
    lm.inference.execute_inference(["Hello, world!"])
    assert sae.dtype == torch.float32 and sae.get_captured().values_NK.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to move to")
def test_attach_sae_moves_a_cpu_sae_onto_the_cuda_model(tiny_gpt2_path):
    lm = LanguageModel.from_pretrained(tiny_gpt2_path, device="cuda")
    sae = small_sae(device="cpu")
    lm.attach_sae(sae, layer_signature=LAYER)
    assert sae.device.type == "cuda" and sae.dtype == torch.float32
    outputs, _ = lm.inference.execute_inference(["Hello, world!"])
    assert sae.get_captured() is not None and outputs.logits.device.type == "cuda"
