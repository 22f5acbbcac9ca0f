"""SAE folders on disk: `cfg.json` + `sae_weights.safetensors`, SAELens's layout.

We write the layout SAELens writes, so one reader serves our own SAEs and published
ones: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`, plus
`threshold [d_sae]` for JumpReLU. Tensors go through safetensors only; nothing is ever
unpickled, so a downloaded folder can not run code.

Every `cfg.json` field is either honoured (our encode/decode give SAELens's numbers),
listed as metadata (SAELens's own inference classes never read it), or refused with a
ValueError naming the field, its value, the file and what would make it loadable. A
field in none of those lists is refused too: an SAE that silently computes something
else is worse than one that does not load. `tests/unit/test_sae_saelens_fixtures.py`
checks this against folders written by SAELens itself; docs/sae.md has the table.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from pipeline.file_formats import read_json, read_safetensors
from pipeline.model.language_model import parse_dtype
from pipeline.sae.config import ARCHITECTURES, SaeConfig
from pipeline.store.atomic import write_atomic
from pipeline.store.location import is_url, make_folder, store_path

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

# Fields that change what encode/decode compute; each is checked in `config_from_cfg`.
_HONOURED_GROUPS = {
    "what SAE it is (activation_fn_str is SAELens 5's activation_fn)": (
        "architecture d_in d_sae k activation_fn activation_fn_str activation_fn_kwargs"
    ),
    "how it computes": (
        "apply_b_dec_to_input normalize_activations rescale_acts_by_decoder_norm "
        "reshape_activations finetuning_scaling_factor dtype"
    ),
}
HONOURED_FIELDS = frozenset(f for names in _HONOURED_GROUPS.values() for f in names.split())

# Fields SAELens's inference SAEs never read: where the SAE was trained, and how.
_METADATA_GROUPS = {
    "ours": "format",
    "SAELens 6 (`metadata` holds the LLM keys below and training details)": "metadata device",
    "the LLM and hook (top level in SAELens 5 configs)": (
        "model_name model_class_name model_from_pretrained_kwargs hook_name hook_point "
        "hook_layer hook_point_layer hook_head_index hook_point_head_index hook_name_out "
        "hook_head_index_out hf_hook_name hf_hook_name_out context_size prepend_bos "
        "exclude_special_tokens seqpos_slice dataset_path dataset_trust_remote_code "
        "neuronpedia_id sae_lens_version sae_lens_training_version"
    ),
    "SAELens 6 training configs (TrainingSAE.save_model checkpoints)": (
        "decoder_init_norm l1_coefficient lp_norm l1_warm_up_steps use_sparse_activations "
        "aux_loss_coefficient jumprelu_init_threshold jumprelu_bandwidth "
        "jumprelu_sparsity_loss_mode l0_coefficient l0_warm_up_steps pre_act_loss_coefficient "
        "jumprelu_tanh_scale jumprelu_ste_to_input target_l0"
    ),
    "SAELens 5 training configs": (
        "use_ghost_grads normalize_sae_decoder noise_scale decoder_orthogonal_init "
        "mse_loss_normalization decoder_heuristic_init decoder_heuristic_init_norm "
        "init_encoder_as_decoder_transpose scale_sparsity_penalty_by_decoder_norm"
    ),
}
METADATA_FIELDS = frozenset(f for names in _METADATA_GROUPS.values() for f in names.split())

# SAELens architectures we have no SAE class for, and what to do instead.
_TRAINING_ONLY = ("batchtopk", "matryoshka_batchtopk")
_GATED_HINT = (
    "a gated SAE with tied weights is a JumpReLU SAE: write a jumprelu folder with "
    "W_enc * exp(r_mag), b_enc = b_mag, threshold = b_mag - exp(r_mag) * b_gate"
)

# SAELens's dtype names (sae_lens.constants.DTYPE_MAP) and ours.
_CFG_DTYPES = {"float64": torch.float64}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_cfg_dtype(value) -> torch.dtype | None:
    if not isinstance(value, str):
        return None
    name = value.removeprefix("torch.")
    if name in _CFG_DTYPES:
        return _CFG_DTYPES[name]
    try:
        return parse_dtype(name)
    except ValueError:
        return None


def _refuse(source, field: str, value, why: str, fix: str) -> ValueError:
    return ValueError(f"{source}: {field}={value!r} {why}; {fix}")


def _architecture(cfg: dict, source) -> str:
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    field = "activation_fn" if "activation_fn" in cfg else "activation_fn_str"
    if activation == "topk" and architecture in ("standard", "topk"):
        return "topk"  # SAELens < 6: TopK as a "standard" SAE with a topk activation
    if activation not in (None, "relu"):
        raise _refuse(
            source,
            field,
            activation,
            f"is not supported for architecture {architecture!r}",
            "only relu (and topk, for a standard or topk SAE) are implemented here",
        )
    if architecture in ARCHITECTURES:
        return architecture
    if architecture in _TRAINING_ONLY:
        fix = (
            "this is a SAELens training checkpoint whose codes depend on the whole batch; "
            "save it with SAELens's TrainingSAE.save_inference_model, which writes it as a "
            "jumprelu SAE, and load that folder"
        )
    elif architecture == "gated":
        fix = f"{_GATED_HINT} (supported: {', '.join(ARCHITECTURES)})"
    else:
        fix = f"use SAELens for it; supported here: {', '.join(ARCHITECTURES)}"
    raise _refuse(source, "architecture", architecture, "is not implemented here", fix)


def _check_unknown_fields(cfg: dict, source) -> None:
    known = HONOURED_FIELDS | METADATA_FIELDS
    unknown = sorted(set(cfg) - known)
    if not unknown:
        return
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        described.append(f"{name}={cfg[name]!r}{hint}")
    raise ValueError(
        f"{source}: unknown field(s) {', '.join(described)}; a field we do not know may "
        "change what the SAE computes, so it is refused. If it only describes the SAE, "
        'move it under "metadata"; otherwise the SAE needs code we do not have'
    )


def _k(cfg: dict, architecture: str, source) -> int | None:
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _refuse(
            source, "activation_fn_kwargs", kwargs, "is not a dict", "use {} or {'k': ...}"
        )
    extra = sorted(set(kwargs) - ({"k"} if architecture == "topk" else set()))
    if extra:
        raise _refuse(
            source,
            "activation_fn_kwargs",
            kwargs,
            f"has arguments we do not implement ({', '.join(extra)})",
            "only {'k': ...} for a topk SAE is understood; remove the others if they do "
            "not change the activation",
        )
    k, kwargs_k = cfg.get("k"), kwargs.get("k")
    if architecture != "topk":
        if k is not None:
            raise _refuse(
                source,
                "k",
                k,
                f"is only used by topk SAEs, not {architecture!r}",
                "remove it, or set architecture to topk",
            )
        return None
    if k is not None and kwargs_k is not None and k != kwargs_k:
        raise _refuse(
            source,
            "k",
            k,
            f"disagrees with activation_fn_kwargs k={kwargs_k!r}",
            "keep one k",
        )
    k = kwargs_k if k is None else k
    d_sae = cfg["d_sae"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
        raise _refuse(
            source,
            "k",
            k,
            f"is not an int in 1..d_sae={d_sae}",
            "a topk SAE needs k (or activation_fn_kwargs.k) in that range",
        )
    return k


def _check_math_fields(cfg: dict, architecture: str, source) -> None:
    for field in ("apply_b_dec_to_input", "rescale_acts_by_decoder_norm"):
        value = cfg.get(field)
        if value is not None and not isinstance(value, bool):
            raise _refuse(source, field, value, "is not a bool", "use true or false")
    if cfg.get("finetuning_scaling_factor") not in (None, False, True):
        raise _refuse(
            source,
            "finetuning_scaling_factor",
            cfg["finetuning_scaling_factor"],
            "is not a bool",
            "use true or false (a scaling_factor tensor must then be all 1)",
        )
    if cfg.get("rescale_acts_by_decoder_norm") and architecture != "topk":
        raise _refuse(
            source,
            "rescale_acts_by_decoder_norm",
            True,
            f"is only defined for topk SAEs, not {architecture!r}",
            "fold the decoder norms into W_enc, b_enc (and threshold) and set it false",
        )
    normalize = cfg.get("normalize_activations")
    if normalize not in (None, False, "none"):
        if normalize in (True, "expected_average_only_in"):
            fix = (
                "its scaling factor s is not in the folder: fold it (W_enc *= s, "
                "W_dec /= s, b_dec /= s) and set normalize_activations to 'none'"
            )
        elif normalize == "covariance_whitening":
            fix = (
                "fold the whitening into the weights (SAELens's fold_activation_whitening) "
                "and set normalize_activations to 'none'"
            )
        else:
            fix = (
                "it rescales every row by that row's own statistics at encode and undoes it "
                "at decode, which we do not implement; only 'none' loads"
            )
        raise _refuse(source, "normalize_activations", normalize, "is not supported", fix)
    reshape = cfg.get("reshape_activations")
    if reshape not in (None, "none", "hook_z"):
        raise _refuse(
            source,
            "reshape_activations",
            reshape,
            "is not supported",
            "only 'none' and 'hook_z' (the SAE reads the heads concatenated) load",
        )
    dtype = cfg.get("dtype")
    if dtype is not None and _parse_cfg_dtype(dtype) is None:
        raise _refuse(
            source,
            "dtype",
            dtype,
            "is not a dtype we know",
            "use float32, float16, bfloat16 or float64",
        )
    metadata = cfg.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _refuse(source, "metadata", metadata, "is not a dict", "use a JSON object")


def config_from_cfg(cfg: dict, source: str | Path = CONFIG_FILE) -> SaeConfig:
    """An `SaeConfig` from a SAELens (or our) `cfg.json` dict, refusing what we can't run.

    `source` names the file in error messages. `rescale_acts_by_decoder_norm` is checked
    here but acts on the weights (`read_sae_folder` folds it), so it is not in the config.
    """
    for field in ("d_in", "d_sae"):
        if field not in cfg:
            raise ValueError(f"{source} has no {field!r} field; is this an SAE folder?")
        value = cfg[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _refuse(source, field, value, "is not a positive int", "fix the config")
    architecture = _architecture(cfg, source)
    _check_unknown_fields(cfg, source)
    k = _k(cfg, architecture, source)
    _check_math_fields(cfg, architecture, source)
    apply_b_dec = cfg.get("apply_b_dec_to_input")
    return SaeConfig(
        architecture=architecture,
        n_inputs=cfg["d_in"],
        n_latents=cfg["d_sae"],
        k=k,
        apply_b_dec_to_input=True if apply_b_dec is None else apply_b_dec,
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


def _check_shapes(config: SaeConfig, tensors: dict[str, torch.Tensor], source=WEIGHTS_FILE) -> None:
    d, f = config.n_inputs, config.n_latents
    expected = {"W_enc": (d, f), "b_enc": (f,), "W_dec": (f, d), "b_dec": (d,)}
    if config.architecture == "jumprelu":
        expected["threshold"] = (f,)
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(
                f"{source} has no tensor {name!r} (a {config.architecture} SAE needs it)"
            )
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"expected {shape} for d_in={d}, d_sae={f}"
            )


def _fold_decoder_norms(
    tensors: dict[str, torch.Tensor], dtype: torch.dtype | None, source
) -> None:
    """SAELens TopK with `rescale_acts_by_decoder_norm`: ranks and returns `pre_i * |W_dec[i]|`
    and decodes `z_i / |W_dec[i]| * W_dec[i]`. With `W_enc[:, i]` and `b_enc[i]` times
    `|W_dec[i]|` and unit decoder rows a plain TopK SAE computes the same (up to rounding,
    done here in float32 or wider and cast once)."""
    wide = torch.promote_types(tensors["W_dec"].dtype, torch.float32)
    norm_F = tensors["W_dec"].to(wide).norm(dim=1)
    if not torch.all(norm_F > 0):
        raise _refuse(
            source,
            "rescale_acts_by_decoder_norm",
            True,
            f"needs non-zero decoder rows, but {int((norm_F == 0).sum())} W_dec rows are zero",
            "SAELens would divide by zero there; drop those latents or set it false",
        )
    out = dtype or tensors["W_dec"].dtype
    tensors["W_enc"] = (tensors["W_enc"].to(wide) * norm_F).to(out)
    tensors["b_enc"] = (tensors["b_enc"].to(wide) * norm_F).to(out)
    tensors["W_dec"] = (tensors["W_dec"].to(wide) / norm_F[:, None]).to(out)


def read_sae_folder(
    path: str | Path,
) -> tuple[SaeConfig, dict[str, torch.Tensor], torch.dtype | None]:
    """(config, tensors on CPU, dtype the config asks for or None) from an SAE folder
    (local, or a prefix on s3://)."""
    path = store_path(path)
    cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (cfg_path, weights_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not an SAE folder: missing {', '.join(missing)} "
            f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    cfg = read_json(cfg_path, "SAE config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} does not hold a JSON object")
    config = config_from_cfg(cfg, cfg_path)
    dtype = _parse_cfg_dtype(cfg.get("dtype"))
    tensors = read_safetensors(weights_path, what="SAE weights file")
    unknown = sorted(set(tensors) - _KNOWN_TENSORS)
    if unknown:
        raise ValueError(
            f"{weights_path} holds tensors we do not know how to use: {', '.join(unknown)}"
        )
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.all(scaling == 1):
        raise ValueError(
            f"{weights_path}: a scaling_factor other than 1 (finetuning_scaling_factor="
            f"{cfg.get('finetuning_scaling_factor')!r} in {cfg_path}) is not supported; "
            "fold it into W_dec first"
        )
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors["log_threshold"].exp()
    tensors.pop("log_threshold", None)
    if config.architecture != "jumprelu":
        tensors.pop("threshold", None)
    _check_shapes(config, tensors, weights_path)
    if cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norms(tensors, dtype, cfg_path)
    return config, tensors, dtype


def write_sae_folder(
    path: str | Path,
    config: SaeConfig,
    tensors: dict[str, torch.Tensor],
    dtype: torch.dtype,
    metadata: dict | None = None,
) -> Path:
    """Write `cfg.json` and `sae_weights.safetensors` into `path` (created if needed; a
    prefix on s3://: each file one object, written whole). Each file appears whole or not
    at all; the weights are written first, so a folder with a `cfg.json` is complete."""
    path = store_path(path)
    make_folder(path)
    _check_shapes(config, tensors)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    write_safetensors(path / WEIGHTS_FILE, cpu)
    write_json(path / CONFIG_FILE, cfg_from_config(config, dtype, metadata))
    return path


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file: streamed to a local file, or serialised and uploaded as one
    object (s3:// has no partial files to stream into)."""
    if is_url(path):
        write_atomic(path, [save(tensors, metadata={"format": "pt"})])
    else:
        save_file(tensors, str(path), metadata={"format": "pt"})


def write_json(path: Path, value) -> None:
    """`value` as indented JSON, written atomically (one whole object on s3://)."""
    write_atomic(path, [(json.dumps(value, indent=2) + "\n").encode()])
