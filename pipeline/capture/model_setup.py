"""Loading the capture model: hooks resolved first, one dry run, a weights fingerprint.

Hook names are resolved right after the weights load and before any corpus work, so a
typo fails in seconds with the closest real names. One tiny forward pass then learns each
hook's width and proves the model runs in the requested dtype on the requested device
(a failure there is a clear error, not a crash in the middle of unit 37).

A model on object storage (`model: s3://bucket/models/gpt2`) is copied into the node's
model cache where its path is first resolved (`model_path`), so everything after loads
and hashes a local folder, while the store records the URL as the model's name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.capture.config import CaptureConfig
from pipeline.hooks import LayerActivationDetector
from pipeline.model import LanguageModel, default_model_path
from pipeline.model.remote import local_model_folder, weights_fingerprint

__all__ = ["deepest_hook", "load_model", "model_path", "probe_widths", "weights_fingerprint"]


def model_path(config: CaptureConfig) -> Path:
    """The local model folder: the config's path, a URL's cached copy, or the default."""
    return local_model_folder(config.model) if config.model else default_model_path()


def load_model(config: CaptureConfig) -> LanguageModel:
    """The model, with every hook name checked (ValueError lists the closest names)."""
    path = model_path(config)
    if not (path / "config.json").exists():
        raise ValueError(f"model {str(path)!r} is not a Hugging Face model folder (no config.json)")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    lm = LanguageModel.from_pretrained(path, device=config.device, dtype=config.model_dtype)
    for hook in config.hooks:
        lm.layers.resolve(hook)
    return lm


def probe_widths(lm: LanguageModel, hooks: tuple[str, ...]) -> dict[str, int]:
    """Each hook's activation width, from one forward pass over a few tokens."""
    detectors = {hook: LayerActivationDetector(hook) for hook in hooks}
    ids = torch.tensor([[lm.pad_token_id] * 4], device=lm.device)
    try:
        with lm.layers.hooks(*detectors.values()):
            lm.inference.forward_ids(ids, torch.ones_like(ids), stop_after=deepest_hook(lm, hooks))
    except Exception as error:
        raise ValueError(
            f"the model cannot run with dtype {lm.dtype} on device {lm.device}: "
            f"{type(error).__name__}: {error}. Try model_dtype=float32"
        ) from error
    widths = {}
    for hook, detector in detectors.items():
        captured = detector.get_captured()
        if captured is None or captured.dim() != 3:
            shape = None if captured is None else tuple(captured.shape)
            raise ValueError(
                f"hook {hook!r} does not produce [batch, seq, d] activations (got {shape})"
            )
        widths[hook] = int(captured.shape[-1])
    return widths


def deepest_hook(lm: LanguageModel, hooks: tuple[str, ...]) -> str | None:
    """The hook the forward pass can stop after (None when one is the whole model)."""
    if any(lm.layers.resolve(h) == "" for h in hooks):
        return None
    return max(hooks, key=lm.layers.depth)
