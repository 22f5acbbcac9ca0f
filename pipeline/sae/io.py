"""SAE folders on disk: `cfg.json` + `sae_weights.safetensors`, SAELens's layout.

We write the layout SAELens writes, so one reader serves our own SAEs and published
ones: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`, plus
`threshold [d_sae]` for JumpReLU. Tensors go through safetensors only; nothing is ever
unpickled, so a downloaded folder can not run code. A folder whose config asks for
something we do not implement (input normalisation, another activation) is refused with
a ValueError instead of loaded into an SAE that silently computes something else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.model.language_model import parse_dtype
from pipeline.sae.config import SaeConfig

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT = "pipeline-sae/1"

_KNOWN_TENSORS = {
    "W_enc",
    "b_enc",
    "W_dec",
    "b_dec",
    "threshold",
    "log_threshold",
    "scaling_factor",
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_cfg_dtype(value) -> torch.dtype | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_dtype(value.removeprefix("torch."))
    except ValueError:
        return None


def config_from_cfg(cfg: dict) -> SaeConfig:
    """An `SaeConfig` from a SAELens (or our) `cfg.json` dict, refusing what we can't run."""
    for field in ("d_in", "d_sae"):
        if field not in cfg:
            raise ValueError(f"{CONFIG_FILE} has no {field!r} field; is this an SAE folder?")
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if activation == "topk":  # older SAELens: TopK as a "standard" SAE with a topk activation
        architecture = "topk"
    elif activation not in (None, "relu"):
        raise ValueError(f"unsupported activation_fn {activation!r}; supported: relu, topk")
    normalize = cfg.get("normalize_activations")
    if normalize not in (None, "none"):
        raise ValueError(
            f"normalize_activations={normalize!r} is not supported (only 'none'); "
            "normalise the activations yourself or fold the scale into the weights"
        )
    k = cfg.get("k", kwargs.get("k")) if architecture == "topk" else None
    return SaeConfig(
        architecture=architecture,
        n_inputs=int(cfg["d_in"]),
        n_latents=int(cfg["d_sae"]),
        k=None if k is None else int(k),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
    )


def cfg_from_config(config: SaeConfig, dtype: torch.dtype, metadata: dict | None = None) -> dict:
    """The `cfg.json` dict for `config`, readable by SAELens and by `config_from_cfg`."""
    cfg = {
        "format": FORMAT,
        "architecture": config.architecture,
        "d_in": config.n_inputs,
        "d_sae": config.n_latents,
        "apply_b_dec_to_input": config.apply_b_dec_to_input,
        "normalize_activations": "none",
        "dtype": dtype_name(dtype),
    }
    if config.k is not None:
        cfg["k"] = config.k
        cfg["activation_fn_kwargs"] = {"k": config.k}
    if metadata:
        cfg["metadata"] = metadata
    return cfg


def _check_shapes(config: SaeConfig, tensors: dict[str, torch.Tensor]) -> None:
    d, f = config.n_inputs, config.n_latents
    expected = {"W_enc": (d, f), "b_enc": (f,), "W_dec": (f, d), "b_dec": (d,)}
    if config.architecture == "jumprelu":
        expected["threshold"] = (f,)
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(
                f"{WEIGHTS_FILE} has no tensor {name!r} (a {config.architecture} SAE needs it)"
            )
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} "
                f"for d_in={d}, d_sae={f}"
            )


def read_sae_folder(
    path: str | Path,
) -> tuple[SaeConfig, dict[str, torch.Tensor], torch.dtype | None]:
    """(config, tensors on CPU, dtype the config asks for or None) from an SAE folder."""
    path = Path(path)
    cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (cfg_path, weights_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not an SAE folder: missing {', '.join(missing)} "
            f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    cfg = json.loads(cfg_path.read_text())
    config = config_from_cfg(cfg)
    tensors = load_file(str(weights_path), device="cpu")
    unknown = sorted(set(tensors) - _KNOWN_TENSORS)
    if unknown:
        raise ValueError(
            f"{WEIGHTS_FILE} holds tensors we do not know how to use: {', '.join(unknown)}"
        )
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.all(scaling == 1):
        raise ValueError("scaling_factor other than 1 is not supported; fold it into W_dec first")
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors["log_threshold"].exp()
    tensors.pop("log_threshold", None)
    if config.architecture != "jumprelu":
        tensors.pop("threshold", None)
    _check_shapes(config, tensors)
    return config, tensors, _parse_cfg_dtype(cfg.get("dtype"))


def write_sae_folder(
    path: str | Path,
    config: SaeConfig,
    tensors: dict[str, torch.Tensor],
    dtype: torch.dtype,
    metadata: dict | None = None,
) -> Path:
    """Write `cfg.json` and `sae_weights.safetensors` into `path` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _check_shapes(config, tensors)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    save_file(cpu, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    cfg = cfg_from_config(config, dtype, metadata)
    (path / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return path
