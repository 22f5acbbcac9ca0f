"""`SaeConfig`: the shape and kind of a sparse autoencoder, an inert frozen value.

Architecture names are SAELens's (`standard`, `topk`, `jumprelu`) so a published SAE's
`cfg.json` and ours speak one vocabulary; `standard` is the ReLU SAE trained with an L1
penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("standard", "topk", "jumprelu")


@dataclass(frozen=True, kw_only=True)
class SaeConfig:
    """What an SAE is, independent of its weights.

    Attributes:
        architecture: one of `standard` (ReLU), `topk`, `jumprelu`.
        n_inputs: width of the activations it reads (SAELens `d_in`).
        n_latents: number of latents, the dictionary size (SAELens `d_sae`).
        k: active latents per token; required for `topk`, None for the others.
        apply_b_dec_to_input: encode `x - b_dec` (True, the usual choice) or `x` itself
            (some published SAEs, e.g. Gemma Scope, set it False).
    """

    architecture: str
    n_inputs: int
    n_latents: int
    k: int | None = None
    apply_b_dec_to_input: bool = True

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}"
            )
        for name in ("n_inputs", "n_latents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.architecture == "topk":
            if (
                isinstance(self.k, bool)
                or not isinstance(self.k, int)
                or not 1 <= self.k <= self.n_latents
            ):
                raise ValueError(
                    f"k must be an int in 1..n_latents={self.n_latents} for a topk SAE, got {self.k!r}"
                )
        elif self.k is not None:
            raise ValueError(
                f"k is only for topk SAEs; got k={self.k!r} for architecture {self.architecture!r}"
            )
