"""`TrainerConfig`: how to train an SAE, an inert frozen value validated on creation.

Kept apart from the training loop (`pipeline.sae.trainer`, which re-exports it). The
architecture decides which fields apply: `k` for TopK, `l1_coefficient` for ReLU,
`l0_coefficient` (and `bandwidth`, `threshold_init`) for JumpReLU. A required field that
is missing, or a sparsity field given to an architecture that does not use it, is a
`ValueError` naming the field: a coefficient passed to the wrong architecture is a
mistake, not something to ignore. Fields that only tune an architecture's recipe and
have sensible defaults (`aux_k`, `bandwidth`, ...) are accepted and ignored elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ARCHITECTURES = ("topk", "relu", "jumprelu")
_B_DEC_INITS = ("mean", "geometric_median", "zeros")
# The sparsity coefficient each architecture needs; TopK needs none (k fixes sparsity).
_COEFFICIENT = {"relu": "l1_coefficient", "jumprelu": "l0_coefficient"}


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """How to train an SAE.

    Attributes:
        n_latents: dictionary size F.
        architecture: `topk` (default), `relu` (L1-trained; a `standard` SAE in files) or
            `jumprelu`.
        k: active latents per row; required for `topk`, None for the others.
        l1_coefficient: weight of the L1 penalty; required for `relu`, None otherwise.
        l0_coefficient: weight of the L0 penalty; required for `jumprelu`, None otherwise.
        bandwidth: `jumprelu` only: width of the rectangle kernel of the threshold's
            straight-through gradient, in activation units (the paper's 0.001 is for
            activations rescaled to a fixed mean squared norm).
        threshold_init: `jumprelu` only: every threshold's starting value (>= 0).
        sparsity_warmup_steps: `relu`/`jumprelu`: the penalty's coefficient ramps up
            linearly from 0 over this many steps (0: full weight from the start).
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: rows per step.
        lr: Adam learning rate.
        buffer_size: rows held by the shuffle buffer (at least 2 * batch_size).
        dead_after_tokens: a latent that fired on none of the last this-many rows is dead
            (AuxK). The `dead_fraction` metric uses min(this, rows seen so far), so a run
            shorter than the window still reports latents that never fired.
        aux_k: `topk` only: dead latents used by the AuxK loss; None means n_inputs // 2.
        aux_coef: `topk` only: weight of the AuxK loss.
        b_dec_init: `mean`, `geometric_median` or `zeros` of the first batch.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end).
        log_every: refresh the progress bar and record metrics every this many steps.
        seed: seeds the initial weights and the shuffle buffer.
        normalize_activations: train on rows scaled by one constant so their mean squared
            norm is n_inputs (estimated on the first batch). Coefficients, learning rate
            and `bandwidth` then carry over between layers and models whose activations
            differ in scale. The saved SAE has the constant folded into its weights, so it
            reads raw activations.
    """

    n_latents: int
    architecture: str = "topk"
    k: int | None = None
    l1_coefficient: float | None = None
    l0_coefficient: float | None = None
    bandwidth: float = 0.001
    threshold_init: float = 0.001
    sparsity_warmup_steps: int = 0
    steps: int = 10_000
    batch_size: int = 4096
    lr: float = 3e-4
    buffer_size: int = 65_536
    dead_after_tokens: int = 10_000_000
    aux_k: int | None = None
    aux_coef: float = 1 / 32
    b_dec_init: str = "mean"
    checkpoint_every: int = 0
    log_every: int = 50
    seed: int = 0
    normalize_activations: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            hint = " ('standard' is called 'relu' here)" if self.architecture == "standard" else ""
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}; "
                f"got {self.architecture!r}{hint}"
            )
        for name in ("n_latents", "steps", "batch_size", "buffer_size", "dead_after_tokens"):
            _check_int(self, name, minimum=1)
        _check_int(self, "log_every", minimum=1)
        _check_int(self, "checkpoint_every", minimum=0)
        _check_int(self, "sparsity_warmup_steps", minimum=0)
        self._check_sparsity_fields()
        if self.buffer_size < 2 * self.batch_size:
            raise ValueError(
                f"buffer_size must be at least 2 * batch_size = {2 * self.batch_size}, got {self.buffer_size}"
            )
        if self.aux_k is not None:
            _check_int(self, "aux_k", minimum=1)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.aux_coef >= 0:
            raise ValueError(f"aux_coef must be >= 0, got {self.aux_coef!r}")
        if not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise ValueError(f"bandwidth must be a positive number, got {self.bandwidth!r}")
        if not (self.threshold_init >= 0 and math.isfinite(self.threshold_init)):
            raise ValueError(f"threshold_init must be a number >= 0, got {self.threshold_init!r}")
        if self.b_dec_init not in _B_DEC_INITS:
            raise ValueError(
                f"b_dec_init must be one of {', '.join(_B_DEC_INITS)}, got {self.b_dec_init!r}"
            )

    def _check_sparsity_fields(self) -> None:
        """k for topk, the matching coefficient for relu/jumprelu, nothing that does not apply."""
        if self.architecture == "topk":
            _check_int(self, "k", minimum=1)
            if self.k > self.n_latents:
                raise ValueError(f"k must be at most n_latents={self.n_latents}, got {self.k}")
        elif self.k is not None:
            raise ValueError(
                f"k is only for topk SAEs; got k={self.k!r} for architecture {self.architecture!r}"
            )
        for architecture, name in _COEFFICIENT.items():
            value = getattr(self, name)
            if self.architecture != architecture:
                if value is not None:
                    raise ValueError(
                        f"{name} is only for {architecture} SAEs; got {name}={value!r} "
                        f"for architecture {self.architecture!r}"
                    )
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (value >= 0 and math.isfinite(value))
            ):
                raise ValueError(
                    f"{name} must be a number >= 0 for a {architecture} SAE, got {value!r}"
                )

    @property
    def sparsity_coefficient(self) -> float:
        """The penalty's full weight: `l1_coefficient` or `l0_coefficient`, 0 for topk."""
        name = _COEFFICIENT.get(self.architecture)
        return 0.0 if name is None else float(getattr(self, name))


def _check_int(config: TrainerConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
