"""`LanguageModel`: a transformers model, its tokenizer, its layers and hooks, one object.

It only loads and holds; running is `lm.inference`, hook bookkeeping is `lm.layers`.
Loading goes through `from_pretrained` for every model, ours and users', so tests load
their tiny models the same way a researcher loads a real one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from pipeline.hooks.hook import BatchContext, Hook, HookType
from pipeline.model.inference import Inference
from pipeline.model.layers import Layers
from pipeline.model.quiet import quiet_model_loading
from pipeline.model.remote import local_model_folder
from pipeline.store.location import is_url

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a name ('float32', 'bf16', ...) or a dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16")


def is_causal_lm(config) -> bool:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return True
    return bool(getattr(config, "is_decoder", False))


class LanguageModel:
    """A model with its tokenizer, `layers` (names, hooks) and `inference` (running)."""

    def __init__(self, model: torch.nn.Module, tokenizer, name_or_path: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.context = BatchContext()
        self.layers = Layers(model, self.context)
        self.inference = Inference(self)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> LanguageModel:
        """Load a causal LM (with its LM head) or an encoder, and its tokenizer.

        `dtype=None` keeps the checkpoint's float32 default. Weights load from
        safetensors; nothing is unpickled. A folder on object storage (`s3://...`) is
        copied once into the node's model cache (`pipeline.model.remote`) and loaded from
        there; `name_or_path` stays the URL.
        """
        quiet_model_loading()
        path = str(name_or_path)
        folder = str(local_model_folder(path)) if is_url(path) else path
        torch_dtype = parse_dtype(dtype)
        try:
            config = AutoConfig.from_pretrained(folder)
            auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
            kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
            model = auto.from_pretrained(folder, use_safetensors=True, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (SafetensorError, OSError, ValueError) as e:
            # transformers' and safetensors' errors often name no file ("invalid header
            # length"); say which model folder failed and what it must hold.
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"the model folder {path} could not be loaded: {reason} "
                "(it needs config.json, safetensors weights and a tokenizer; a truncated or "
                "pickled weights file is refused)"
            ) from e
        return cls(model.to(device), tokenizer, name_or_path=path)

    # --- facts about the model ---------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        config = self.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def pad_token_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return candidate
        return 0

    # --- SAEs ----------------------------------------------------------------------------
    def attach_sae(
        self, sae: Hook, layer_signature: str | int, hook_type: HookType | str | None = None
    ) -> str:
        """Register an SAE (a detector and a controller in one hook) on a layer.

        By default it reads and edits the layer's output; `hook_type="pre_forward"` makes
        it read and edit the layer's first input instead (a block's residual stream on
        the way in: SAELens's `blocks.N.hook_resid_pre` SAEs attach to `layer_N` so).
        An SAE on another device than the model is moved to the model's device (in
        place, as `nn.Module.to` does); its dtype stays as it is.
        """
        if hook_type is not None:
            sae.hook_type = HookType(hook_type)
        check = getattr(sae, "check_layer", None)
        if check is not None:
            check(self, layer_signature)
        sae_device = getattr(sae, "device", None)
        if isinstance(sae, torch.nn.Module) and sae_device is not None:
            model_device = self.device
            if sae_device != model_device:
                sae.to(device=model_device)
        return self.layers.register_hook(layer_signature, sae)

    def detach_sae(self, sae_or_id) -> None:
        self.layers.unregister_hook(sae_or_id)
