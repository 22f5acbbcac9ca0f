"""The seed page's SAE section (advanced-hooks-patterns.txt), run as written.

The page scales latent 42 of a freshly initialised SAE. Whether a random latent fires on
"Hello, world!" depends on the initial weights, so the test first picks a torch seed
under which latent 42 is among some token's top k at layer_0 (found by encoding that
layer's captured activations), then runs the page's code unchanged and checks that the
activations, and so the logits, are modified.
"""

from __future__ import annotations

import pytest
import torch

from pipeline import Controller, Detector, LanguageModel, LayerActivationDetector
from pipeline import TopKSae as _TopKSae


@pytest.fixture(scope="module")
def lm(seed_gpt2_path):
    return LanguageModel.from_pretrained(seed_gpt2_path)


def seed_where_latent_42_fires(lm) -> int:
    detector = LayerActivationDetector("layer_0")
    with lm.layers.hooks(detector):
        lm.inference.execute_inference(["Hello, world!"])
    acts = detector.get_captured()[0]
    for seed in range(1000):
        torch.manual_seed(seed)
        values, indices = _TopKSae(n_latents=512, n_inputs=768, k=8).encode_sparse(acts)
        if bool(((indices == 42) & (values > 0)).any()):
            return seed
    raise AssertionError("no seed below 1000 makes latent 42 fire on 'Hello, world!'")


def test_sae_section_modifies_activations_through_latent_42(lm):
    torch.manual_seed(seed_where_latent_42_fires(lm))
    baseline, _ = lm.inference.execute_inference(["Hello, world!"])

    # --- the page, as written (`mi_crow.mechanistic.sae` is `pipeline` here) ---
    from pipeline import TopKSae

    sae = TopKSae(n_latents=512, n_inputs=768, k=8)
    lm.attach_sae(sae, layer_signature="layer_0")
    sae.concepts.enable_text_tracking(top_k=10)
    outputs, encodings = lm.inference.execute_inference(["Hello, world!"])
    sae.concepts.manipulate_concept(neuron_idx=42, scale=1.5)
    outputs, encodings = lm.inference.execute_inference(["Hello, world!"])
    # --- end of the page ---

    assert isinstance(sae, Detector) and isinstance(sae, Controller)
    assert bool((sae.get_captured().latent(42) > 0).any())
    assert not torch.equal(outputs.logits, baseline.logits)
    top = sae.concepts.get_top_texts(42)
    assert top and top[0].text == "Hello, world!" and top[0].score > 0
    lm.detach_sae(sae)
