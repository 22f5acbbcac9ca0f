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

import torch

from pipeline.file_formats import read_json, read_safetensors
from pipeline.hooks import FunctionController
from pipeline.interventions.spec import (
    Direction,
    InterventionSpec,
    Step,
    Tracker,
    step_label,
    tracker_label,
)
from pipeline.model import LanguageModel
from pipeline.sae import load_sae
from pipeline.sae.base import Sae
from pipeline.sae.hooking import layer_output_width
from pipeline.sae.io import CONFIG_FILE, config_from_cfg
from pipeline.store.location import store_path


def sae_n_latents(path: str) -> int:
    """An SAE folder's number of latents, from its cfg.json alone (no weights are read)."""
    cfg_path = store_path(path) / CONFIG_FILE  # a folder, or a prefix on s3://
    if not cfg_path.is_file():
        raise ValueError(f"{path} is not an SAE folder: it has no {CONFIG_FILE}")
    cfg = read_json(cfg_path, "SAE config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} does not hold a JSON object")
    return config_from_cfg(cfg, cfg_path).n_latents


def check_layers(spec: InterventionSpec, lm: LanguageModel) -> None:
    """Every layer the spec names is one of the model's (before any SAE is loaded)."""
    for index, step in enumerate(spec.steps):
        _resolve(lm, step_label(index, step.name), "layer", step.layer)
    for index, layer in enumerate(spec.measure):
        _resolve(lm, f"measure[{index}]", "", layer)
    for index, tracker in enumerate(spec.track):
        _resolve(lm, tracker_label(index, tracker.name), "layer", tracker.layer)


def _resolve(lm: LanguageModel, where: str, key: str, layer: str) -> None:
    try:
        lm.layers.resolve(layer)
    except ValueError as error:
        raise ValueError(f"{where}: {key + ': ' if key else ''}{error}") from None


def load_step_sae(
    path: str, lm: LanguageModel, layer: str, where: str = "", key: str = "sae"
) -> Sae:
    """An SAE on the model's device, checked against the layer's width."""
    try:
        sae = load_sae(path, device=lm.device)
        sae.check_layer(lm, layer)
    except (ValueError, OSError) as error:
        raise ValueError(f"{where + ': ' if where else ''}{key}: {error}") from error
    return sae


def direction_vector(
    direction: Direction, lm: LanguageModel, layer: str, where: str = "", key: str = "add"
) -> torch.Tensor:
    """The unit-norm direction [D] on the model's device, in float32."""
    prefix = f"{where + ': ' if where else ''}{key}"
    if direction.sae is not None:
        sae = load_step_sae(direction.sae, lm, layer, where, f"{key}.sae")
        if not 0 <= direction.latent < sae.n_latents:
            raise ValueError(
                f"{prefix}.latent: latent {direction.latent} is outside the SAE's "
                f"{sae.n_latents} latents (0..{sae.n_latents - 1}; {direction.sae})"
            )
        vector = sae.W_dec[direction.latent].detach().float()
    else:
        tensors = read_safetensors(direction.vector, what="direction file")
        if direction.key is None and len(tensors) != 1:
            raise ValueError(
                f"{prefix}.vector: {direction.vector} holds {sorted(tensors)}; name one with key: NAME"
            )
        name = direction.key if direction.key is not None else next(iter(tensors))
        if name not in tensors:
            raise ValueError(
                f"{prefix}.key: {direction.vector} has no tensor {name!r}; it has {sorted(tensors)}"
            )
        vector = tensors[name].float().reshape(-1)
    width = layer_output_width(lm, layer)
    if vector.numel() != width:
        raise ValueError(
            f"{prefix}: the direction has {vector.numel()} values but layer {layer} is {width} wide"
        )
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError(f"{prefix}: the direction is zero or not finite")
    return (vector / norm).to(lm.device)


def step_function(
    step: Step, lm: LanguageModel, means: dict[str, torch.Tensor], where: str = ""
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """x [B, T, D] -> the replacement (or None to keep x), before any position limit."""
    if step.operation == "sae":
        sae = load_step_sae(step.sae, lm, step.layer, where)
        sae.splice = step.splice
        for latent, kind, number in step.concepts:
            if not 0 <= latent < sae.n_latents:
                raise ValueError(
                    f"{where}: concepts[{latent}]: latent {latent} is outside the SAE's "
                    f"{sae.n_latents} latents (0..{sae.n_latents - 1}; {step.sae})"
                )
            if kind == "scale":
                sae.concepts.manipulate_concept(latent, number)
            else:
                sae.concepts.set_concept(latent, number)
        return lambda x: sae.modify_activations(None, (), x)
    if step.operation == "scale":
        factor = step.factor
        return lambda x: x * factor
    if step.operation in ("add", "project_out"):
        unit_D = direction_vector(step.direction, lm, step.layer, where, step.operation)
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
    for index, step in enumerate(steps):
        where = step_label(index, step.name)
        _resolve(lm, where, "layer", step.layer)
        function = at_positions(step_function(step, lm, means, where), step.positions)
        controller = FunctionController(step.layer, function, hook_id=f"step:{step.name}")
        controller.disable()
        controllers.append(controller)
    return controllers


def load_trackers(track: tuple[Tracker, ...], lm: LanguageModel) -> dict[str, Sae]:
    """Each tracker's SAE, with its latent indices checked."""
    saes = {}
    for index, tracker in enumerate(track):
        where = tracker_label(index, tracker.name)
        _resolve(lm, where, "layer", tracker.layer)
        sae = load_step_sae(tracker.sae, lm, tracker.layer, where)
        bad = [latent for latent in tracker.latents if not 0 <= latent < sae.n_latents]
        if bad:
            raise ValueError(
                f"{where}: latents {bad} are outside the SAE's {sae.n_latents} latents "
                f"(0..{sae.n_latents - 1}; {tracker.sae})"
            )
        saes[tracker.name] = sae
    return saes


def file_fingerprint(path: str) -> str:
    """sha256 over a file, or over a folder's files (names and bytes, sorted); local or on
    s3:// (the same bytes give the same digest wherever they are)."""
    digest = hashlib.sha256()
    root = store_path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
