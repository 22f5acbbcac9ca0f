"""A spec's steps as controllers on a loaded model, and its trackers as SAEs.

Every step becomes one `FunctionController` at its layer. Stages switch steps on and off
with `enable()` / `disable()`, so one set of hooks serves the baseline pass (all off)
and every prefix of the cascade. An SAE step reuses the SAE's own controller arithmetic
(`Sae.modify_activations`: concept edits add only `decode(z') - decode(z)`, splice
returns the reconstruction).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline.hooks import FunctionController
from pipeline.interventions.spec import Direction, Step, Tracker
from pipeline.model import LanguageModel
from pipeline.sae import load_sae
from pipeline.sae.base import Sae, layer_output_width


def load_step_sae(path: str, lm: LanguageModel, layer: str) -> Sae:
    """An SAE on the model's device, checked against the layer's width."""
    sae = load_sae(path, device=lm.device)
    sae.check_layer(lm, layer)
    return sae


def direction_vector(direction: Direction, lm: LanguageModel, layer: str) -> torch.Tensor:
    """The unit-norm direction [D] on the model's device, in float32."""
    if direction.sae is not None:
        sae = load_step_sae(direction.sae, lm, layer)
        if not 0 <= direction.latent < sae.n_latents:
            raise ValueError(
                f"latent {direction.latent} is out of range for the SAE at {direction.sae} "
                f"({sae.n_latents} latents)"
            )
        vector = sae.W_dec[direction.latent].detach().float()
    else:
        tensors = load_file(direction.vector)
        if direction.key is None and len(tensors) != 1:
            raise ValueError(f"{direction.vector} holds {sorted(tensors)}; name one with key: NAME")
        key = direction.key if direction.key is not None else next(iter(tensors))
        if key not in tensors:
            raise ValueError(f"{direction.vector} has no tensor {key!r}; it has {sorted(tensors)}")
        vector = tensors[key].float().reshape(-1)
    width = layer_output_width(lm, layer)
    if vector.numel() != width:
        raise ValueError(
            f"the direction has {vector.numel()} values but layer {layer} is {width} wide"
        )
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError(f"the direction for layer {layer} is zero or not finite")
    return (vector / norm).to(lm.device)


def step_function(
    step: Step, lm: LanguageModel, means: dict[str, torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """x [B, T, D] -> the replacement (or None to keep x), before any position limit."""
    if step.operation == "sae":
        sae = load_step_sae(step.sae, lm, step.layer)
        sae.splice = step.splice
        for latent, kind, number in step.concepts:
            if kind == "scale":
                sae.concepts.manipulate_concept(latent, number)
            else:
                sae.concepts.set_concept(latent, number)
        return lambda x: sae.modify_activations(None, (), x)
    if step.operation == "scale":
        factor = step.factor
        return lambda x: x * factor
    if step.operation in ("add", "project_out"):
        unit_D = direction_vector(step.direction, lm, step.layer)
        if step.operation == "add":
            shift_D = unit_D * step.coefficient
            return lambda x: x + shift_D.to(x.dtype)
        return lambda x: x - (x.float() @ unit_D).unsqueeze(-1) * unit_D
    if step.ablate == "zero":
        return torch.zeros_like
    mean_D = means[step.layer].to(lm.device)
    return lambda x: mean_D.to(x.dtype).expand_as(x)


def at_positions(
    function: Callable[[torch.Tensor], torch.Tensor | None], positions: tuple[int, ...] | None
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Limit a step to some positions of each window (the others keep their values)."""
    if positions is None:
        return function

    def limited(x_BTD: torch.Tensor) -> torch.Tensor | None:
        inside = [p for p in positions if p < x_BTD.shape[1]]
        if not inside:
            return None
        new_BTD = function(x_BTD)
        if new_BTD is None:
            return None
        index = torch.tensor(inside, device=x_BTD.device)
        result = x_BTD.clone()
        result[:, index] = new_BTD[:, index].to(x_BTD.dtype)
        return result

    return limited


def build_controllers(
    steps: tuple[Step, ...], lm: LanguageModel, means: dict[str, torch.Tensor]
) -> list[FunctionController]:
    """One controller per step, in cascade order, all disabled."""
    controllers = []
    for step in steps:
        lm.layers.resolve(step.layer)
        function = at_positions(step_function(step, lm, means), step.positions)
        controller = FunctionController(step.layer, function, hook_id=f"step:{step.name}")
        controller.disable()
        controllers.append(controller)
    return controllers


def load_trackers(track: tuple[Tracker, ...], lm: LanguageModel) -> dict[str, Sae]:
    """Each tracker's SAE, with its latent indices checked."""
    saes = {}
    for tracker in track:
        sae = load_step_sae(tracker.sae, lm, tracker.layer)
        bad = [latent for latent in tracker.latents if not 0 <= latent < sae.n_latents]
        if bad:
            raise ValueError(
                f"tracker {tracker.name}: latents {bad} are out of range for the SAE at "
                f"{tracker.sae} ({sae.n_latents} latents)"
            )
        saes[tracker.name] = sae
    return saes


def file_fingerprint(path: str) -> str:
    """sha256 over a file, or over a folder's files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
