"""`Sae`: one object that is an `nn.Module`, a `Detector` and a `Controller` (the hook
roles are `SaeHooks`, pipeline/sae/hooking.py; the files, pipeline/sae/io.py).

Why it is built this way:

- One hook, two roles. The forward hook encodes the layer's output once; the codes are
  kept (detector) and, only when a concept is edited or `splice` is on, used to build the
  replacement (controller). With nothing edited the hook returns None, so the model's
  output is bit-identical to a run without the SAE. During
  `execute_inference(..., with_controllers=False)` codes are still kept.
- Edits add only the change they cause: `x + decode(z') - decode(z)` keeps the SAE's
  reconstruction error in the residual stream, and since decoding is linear this is
  `x + (z'_S - z_S) @ W_dec[S]` over the touched latents S only. `splice=True` returns
  `decode(z')` instead (the reconstruction replaces the activations).
- Codes stay sparse: every SAE hands out `(values_NK, indices_NK)`; a TopK SAE has
  exactly k slots per token, the ReLU kinds as many as the busiest token needs.
- Computation happens in the SAE's dtype and device (a float32 SAE on a bfloat16
  model); `Controller._checked` casts the replacement back.
- Weights use SAELens's names and layout (`W_enc [D, F]`, `W_dec [F, D]`), so a
  published SAE loads without transposes.

Legend: B batch, T tokens, N token rows, D input width (n_inputs), F latents
(n_latents), K code slots per row, S edited latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as nnf
from torch import nn

from pipeline.hooks.detector import Detector
from pipeline.hooks.hook import HookType
from pipeline.sae.codes import SparseCodes
from pipeline.sae.concepts import Concepts
from pipeline.sae.config import SaeConfig
from pipeline.sae.hooking import SaeHooks
from pipeline.sae.io import read_sae_folder, write_sae_folder
from pipeline.sae.scratch import ScratchRows


def _can_write_inplace(t: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and t.requires_grad)


class Sae(nn.Module, SaeHooks):
    """Base of every SAE: weights, encode/decode, the hook, save/load.

    Subclasses set `architecture` and implement `_activate(pre_NF)` (dense codes), or
    override `encode`/`encode_sparse` for sparse activations (TopK).
    """

    architecture: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Sae]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("architecture"):
            Sae._registry[cls.architecture] = cls

    def __init__(
        self,
        config: SaeConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        splice: bool = False,
    ):
        if config.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} needs architecture {self.architecture!r}, got {config.architecture!r}"
            )
        nn.Module.__init__(self)
        Detector.__init__(self, hook_type=HookType.FORWARD)
        self.config = config
        factory = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.empty(config.n_inputs, config.n_latents, **factory))
        self.b_enc = nn.Parameter(torch.zeros(config.n_latents, **factory))
        self.W_dec = nn.Parameter(torch.empty(config.n_latents, config.n_inputs, **factory))
        self.b_dec = nn.Parameter(torch.zeros(config.n_inputs, **factory))
        self.splice = splice
        self.concepts = Concepts(self)
        self.tokenizer = None  # set by check_layer (lm.attach_sae); used to show texts
        self._latest: SparseCodes | None = None  # see SaeHooks.get_captured
        self._unread: tuple | None = None
        self._scratch = ScratchRows()  # see pre_activations(scratch=True)
        self.reset_parameters()

    # --- facts ---------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return self.config.n_inputs

    @property
    def n_latents(self) -> int:
        return self.config.n_latents

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def extra_repr(self) -> str:
        k = f", k={self.config.k}" if self.config.k is not None else ""
        return (
            f"id={self.id!r}, layer={self.layer_signature!r}, n_inputs={self.n_inputs}, "
            f"n_latents={self.n_latents}{k}, dtype={self.dtype}, splice={self.splice}"
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm decoder rows, encoder tied to the decoder, zero biases.

        Every pre-activation is then a projection of `x - b_dec` on a random direction:
        about half are positive for any input, so TopK codes have k real latents.
        """
        w_FD = torch.randn(self.n_latents, self.n_inputs, dtype=torch.float32, device=self.device)
        w_FD /= w_FD.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w_FD)
        self.W_enc.copy_(w_FD.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale every decoder row (one latent's direction) to unit norm, in place."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # --- encode / decode -----------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.shape[-1] != self.n_inputs:
            raise ValueError(
                f"{type(self).__name__} reads width n_inputs={self.n_inputs}, got input of shape {tuple(x.shape)}"
            )
        return x.reshape(-1, self.n_inputs), tuple(x.shape[:-1])

    def pre_activations(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """`W_enc (x - b_dec) + b_enc` as [N, F] for rows x [N, D], one addmm.

        `scratch=True` (for callers that drop the result before their next call) writes
        into this thread's reused CPU buffer when no autograd graph is being built
        (pipeline/sae/scratch.py says why).
        """
        x_ND = x - self.b_dec if self.config.apply_b_dec_to_input else x
        if scratch and x_ND.device.type == "cpu" and not torch.is_grad_enabled():
            out_NF = self._scratch.rows(x_ND.shape[0], self.n_latents, self.W_enc.dtype)
            return torch.addmm(self.b_enc, x_ND, self.W_enc, out=out_NF)
        return torch.addmm(self.b_enc, x_ND, self.W_enc)

    def _activate(self, pre_NF: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense codes [..., F] of activations [..., D]."""
        x_ND, lead = self._rows(x)
        return self._activate(self.pre_activations(x_ND)).reshape(*lead, self.n_latents)

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes as (values [..., K], indices [..., K]), K the most non-zeros of any row."""
        x_ND, lead = self._rows(x)
        codes_NF = self._activate(self.pre_activations(x_ND, scratch=True))
        num_slots = max(1, int((codes_NF > 0).sum(1).max())) if codes_NF.shape[0] else 1
        values_NK, indices_NK = codes_NF.topk(num_slots, dim=1)
        return values_NK.reshape(*lead, num_slots), indices_NK.reshape(*lead, num_slots)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """`W_dec z + b_dec` for dense codes [..., F]."""
        codes_NF = codes.reshape(-1, self.n_latents)
        return torch.addmm(self.b_dec, codes_NF, self.W_dec).reshape(
            *codes.shape[:-1], self.n_inputs
        )

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """`W_dec z + b_dec` for sparse codes, gathering only the K decoder rows per token."""
        num_slots = values.shape[-1]
        x_hat_ND = nnf.embedding_bag(
            indices.reshape(-1, num_slots),
            self.W_dec,
            per_sample_weights=values.reshape(-1, num_slots).to(self.dtype),
            mode="sum",
        )
        return (x_hat_ND + self.b_dec).reshape(*values.shape[:-1], self.n_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction `decode(encode(x))`."""
        return self.decode_sparse(*self.encode_sparse(x))

    # --- files -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens layout) into folder `path`."""
        metadata = {"class": type(self).__name__}
        if self.layer_signature is not None:
            metadata["layer_signature"] = self.layer_signature
        return write_sae_folder(path, self.config, self.state_dict(), self.dtype, metadata)

    @classmethod
    def from_config(
        cls,
        config: SaeConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Sae:
        """A freshly initialised SAE of the class `config.architecture` names."""
        sae_cls = Sae._registry.get(config.architecture)
        if sae_cls is None:
            raise ValueError(f"no SAE class for architecture {config.architecture!r}")
        if not issubclass(sae_cls, cls):
            raise TypeError(
                f"the config describes a {config.architecture} SAE ({sae_cls.__name__}), not a {cls.__name__}"
            )
        kwargs = {
            "apply_b_dec_to_input": config.apply_b_dec_to_input,
            "dtype": dtype,
            "device": device,
        }
        if config.k is not None:
            kwargs["k"] = config.k
        return sae_cls(config.n_latents, config.n_inputs, **kwargs)


def load_sae(
    path: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Sae:
    """Load any SAE folder, ours or SAELens's, local or on s3://: the class follows
    `cfg.json`'s `architecture`; `dtype` defaults to the folder's."""
    config, tensors, cfg_dtype = read_sae_folder(path)
    dtype = dtype or cfg_dtype or tensors["W_enc"].dtype
    sae = Sae.from_config(config, dtype=dtype, device=device)
    sae.load_state_dict(tensors)
    return sae
