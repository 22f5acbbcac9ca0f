"""`python -m jobs.hooks_demo`: a detector and a controller on the embedded MiniLM, and
what changed."""

from __future__ import annotations

import argparse

import torch

from pipeline.hooks import FunctionController, LayerActivationDetector
from pipeline.model import LanguageModel, default_model_path

DEMO_TEXTS = [
    "Activation capture turns a corpus into data.",
    "Sparse autoencoders find features in it.",
]


def run_hooks_demo(
    model_path: str | None = None, layer: str = "layer_3", scale: float = 1.5
) -> str:
    """Capture `layer`, then scale `layer_1` by `scale` and report how `layer` moved."""
    lm = LanguageModel.from_pretrained(model_path or default_model_path())
    detector = LayerActivationDetector(layer, exclude_padding=True)
    lines = [f"model: {lm.name_or_path} ({lm.layers.num_blocks} blocks, d={lm.hidden_size})"]
    with lm.layers.hooks(detector):
        outputs, encodings = lm.inference.execute_inference(DEMO_TEXTS)
        clean = detector.get_captured()
        with lm.layers.hooks(FunctionController("layer_1", lambda x: x * scale)):
            steered_outputs, _ = lm.inference.execute_inference(DEMO_TEXTS)
        steered = detector.get_captured()
    num_tokens = int(encodings["attention_mask"].sum())
    lines.append(
        f"captured {layer} ({lm.layers.resolve(layer)}): {tuple(clean.shape)} = {num_tokens} real tokens x d"
    )
    lines.append(f"  mean {clean.mean().item():+.4f}  std {clean.std().item():.4f}")
    delta = (steered - clean).norm(dim=-1) / clean.norm(dim=-1)
    lines.append(
        f"with layer_1 scaled by {scale}: {layer} moved by {delta.mean().item():.1%} (mean relative L2)"
    )
    final_delta = (steered_outputs.last_hidden_state - outputs.last_hidden_state).abs().max().item()
    lines.append(f"  last hidden state max |change|: {final_delta:.4f}")
    cosine = torch.nn.functional.cosine_similarity(clean, steered, dim=-1).mean().item()
    lines.append(f"  mean cosine(clean, steered) at {layer}: {cosine:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded MiniLM)")
    parser.add_argument("--layer", default="layer_3", help="layer to capture (default: layer_3)")
    parser.add_argument("--scale", type=float, default=1.5, help="factor applied at layer_1")
    args = parser.parse_args(argv)
    print(run_hooks_demo(args.model, args.layer, args.scale))


if __name__ == "__main__":
    main()
