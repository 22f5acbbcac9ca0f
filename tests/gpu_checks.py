"""`python -m tests.gpu_checks`: stage 2 and SAE hooks on a CUDA device, where one is lent.

Not part of `make test` (no GPU there). It checks what only a GPU run can: SAEs attached
to a bf16 model on cuda, and an intervention cascade (SAE concept edit, direction, mean
ablation, tracked SAE) replayed on cuda from a store captured on cuda. Exits non-zero
on the first failed check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from pipeline.capture import CaptureConfig, capture
from pipeline.interventions import run_interventions, spec_from_dict
from pipeline.model import LanguageModel
from pipeline.sae import TopKSae
from tests.helpers import build_tiny_gpt2, train_bpe_tokenizer


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        sys.exit(1)


def main(device: str = "cuda") -> None:
    work = Path(tempfile.mkdtemp())
    train_bpe_tokenizer(work / "tok")
    model = build_tiny_gpt2(work / "gpt2", tokenizer_dir=work / "tok")

    lm = LanguageModel.from_pretrained(model, device=device, dtype="bfloat16")
    sae = TopKSae(n_latents=256, n_inputs=64, k=8)  # float32, on the CPU
    plain, _ = lm.inference.execute_inference(["Hello, world!"])
    lm.attach_sae(sae, layer_signature="layer_1")
    check(sae.device == lm.device, f"attach_sae moves a CPU SAE to the model's {device}")
    attached, _ = lm.inference.execute_inference(["Hello, world!"])
    check(torch.equal(plain.logits, attached.logits), "an unedited SAE leaves bf16 logits equal")
    sae.concepts.set_concept(3, 5.0)
    edited, _ = lm.inference.execute_inference(["Hello, world!"])
    check(not torch.equal(plain.logits, edited.logits), "a concept edit changes the logits")

    capture(
        CaptureConfig(
            model=str(model),
            hooks=("layer_1", "layer_3"),
            dtype="float32",
            model_dtype="float32",
            device=device,
            context_length=64,
            rows_per_unit=512,
            max_tokens=2048,
            out=str(work / "store"),
        ),
        progress=False,
    )
    torch.manual_seed(0)
    TopKSae(n_latents=256, n_inputs=64, k=8).save(work / "sae1")
    TopKSae(n_latents=256, n_inputs=64, k=8).save(work / "sae3")
    save_file({"d": torch.randn(64)}, str(work / "dir.safetensors"))
    steps = [
        {"name": "noop", "layer": "layer_2", "scale": 1.0},
        {
            "name": "edit",
            "layer": "layer_1",
            "sae": str(work / "sae1"),
            "concepts": {3: {"set": 4.0}},
        },
        {
            "name": "steer",
            "layer": "layer_2",
            "add": {"vector": str(work / "dir.safetensors")},
            "coefficient": 2.0,
        },
        {"name": "ablate", "layer": "layer_3", "ablate": "mean", "positions": [0]},
    ]
    track = [{"name": "t", "layer": "layer_3", "sae": str(work / "sae3"), "latents": [1, 2]}]
    results = {}
    for where in (device, "cpu"):
        spec = spec_from_dict(
            {
                "store": str(work / "store"),
                "out": str(work / f"effects-{where}"),
                "steps": steps,
                "track": track,
                "measure": ["layer_1", "layer_2", "layer_3"],
                "device": where,
            }
        )
        results[where] = run_interventions(spec, progress=False).summary
    effects = pd.read_parquet(work / f"effects-{device}" / "effects")
    first = effects[effects.stage == 1]
    check(bool((first.kl == 0).all() and first.top1_agree.all()), "an identity step has no effect")
    check(bool(np.isfinite(effects.kl).all()), f"every KL on {device} is finite")
    numeric = results[device].select_dtypes("number")
    close = np.allclose(numeric, results["cpu"].select_dtypes("number"), rtol=1e-3, atol=1e-4)
    check(close, f"per-stage means on {device} equal those on cpu (float32)")
    print(results[device].to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
