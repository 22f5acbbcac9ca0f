"""Training a TopK SAE on a stream of activation rows (Gao et al., "Scaling and evaluating
sparse autoencoders", 2024).

The trainer takes any iterator of float32 [N, D] batches (numpy or torch) so it is
tested on synthetic data and fed from a store by `jobs/train_sae.py` alike. Choices:

- Decoder rows (one latent's direction) are kept unit-norm: the gradient component
  parallel to each row is removed before the Adam step and rows are renormalised after,
  so the optimiser can not buy sparsity by shrinking codes and growing directions.
- `b_dec` starts at the mean (or geometric median) of the first batch; the encoder
  starts as the decoder's transpose.
- Dead latents (no activation in the last `dead_after_tokens` rows) get the AuxK loss:
  the residual `x - x_hat` is reconstructed from the top `aux_k` dead latents alone and
  that reconstruction's MSE is added with weight `aux_coef`, which gives dead latents a
  gradient towards what the live ones miss.
- Checkpoints are folders: the SAE itself (`cfg.json` + `sae_weights.safetensors`,
  loadable with `load_sae`), and `trainer_state.safetensors` + `trainer_state.json`
  with the Adam moments, the dead-latent counters, the step and the config. No pickle.

Legend: N rows in a batch, D input width, F latents, K active latents per row.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pipeline.sae.architectures import TopKSae
from pipeline.sae.base import load_sae
from pipeline.sae.buffer import mixing_buffer
from pipeline.sae.select import topk_rows

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
_B_DEC_INITS = ("mean", "geometric_median", "zeros")


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """How to train a TopK SAE.

    Attributes:
        n_latents: dictionary size F.
        k: active latents per row.
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: rows per step.
        lr: Adam learning rate.
        buffer_size: rows held by the shuffle buffer (at least 2 * batch_size).
        dead_after_tokens: a latent that fired on none of the last this-many rows is dead.
        aux_k: dead latents used by the AuxK loss; None means n_inputs // 2.
        aux_coef: weight of the AuxK loss.
        b_dec_init: `mean`, `geometric_median` or `zeros` of the first batch.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end).
        log_every: refresh the progress bar and record metrics every this many steps.
        seed: seeds the initial weights and the shuffle buffer.
    """

    n_latents: int
    k: int
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

    def __post_init__(self) -> None:
        for name in (
            "n_latents",
            "k",
            "steps",
            "batch_size",
            "buffer_size",
            "dead_after_tokens",
            "log_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.k > self.n_latents:
            raise ValueError(f"k must be at most n_latents={self.n_latents}, got {self.k}")
        if self.buffer_size < 2 * self.batch_size:
            raise ValueError(
                f"buffer_size must be at least 2 * batch_size = {2 * self.batch_size}, got {self.buffer_size}"
            )
        if self.aux_k is not None and (not isinstance(self.aux_k, int) or self.aux_k < 1):
            raise ValueError(f"aux_k must be a positive int or None, got {self.aux_k!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.aux_coef >= 0:
            raise ValueError(f"aux_coef must be >= 0, got {self.aux_coef!r}")
        if self.b_dec_init not in _B_DEC_INITS:
            raise ValueError(
                f"b_dec_init must be one of {', '.join(_B_DEC_INITS)}, got {self.b_dec_init!r}"
            )
        if (
            isinstance(self.checkpoint_every, bool)
            or not isinstance(self.checkpoint_every, int)
            or self.checkpoint_every < 0
        ):
            raise ValueError(f"checkpoint_every must be an int >= 0, got {self.checkpoint_every!r}")


def geometric_median(x_ND: torch.Tensor, iterations: int = 30, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to the rows."""
    median_D = x_ND.mean(0)
    for _ in range(iterations):
        weights_N = 1.0 / (x_ND - median_D).norm(dim=1).clamp_min(eps)
        median_D = (weights_N[:, None] * x_ND).sum(0) / weights_N.sum()
    return median_D


class SaeTrainer:
    """One TopK SAE, its Adam optimiser and the bookkeeping to train it step by step."""

    def __init__(self, config: TrainerConfig, n_inputs: int, device: str | torch.device = "cpu"):
        self.config = config
        self.n_inputs = n_inputs
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.sae = TopKSae(config.n_latents, n_inputs, config.k, device=device)
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr)
        self.step = 0
        self.b_dec_ready = config.b_dec_init == "zeros"
        self.tokens_since_fired_F = torch.zeros(config.n_latents, dtype=torch.long, device=device)

    @property
    def aux_k(self) -> int:
        return self.config.aux_k or max(1, self.n_inputs // 2)

    @torch.no_grad()
    def _init_b_dec(self, x_ND: torch.Tensor) -> None:
        center = (
            geometric_median(x_ND) if self.config.b_dec_init == "geometric_median" else x_ND.mean(0)
        )
        self.sae.b_dec.copy_(center)
        self.b_dec_ready = True

    def train_step(self, x_ND: torch.Tensor) -> dict[str, float]:
        """One Adam step on rows [N, D]; returns the step's metrics."""
        sae = self.sae
        x_ND = torch.as_tensor(x_ND).to(device=sae.device, dtype=sae.dtype)
        if not self.b_dec_ready:
            self._init_b_dec(x_ND)
        pre_NF = sae.pre_activations(x_ND)
        values_NK, indices_NK = topk_rows(pre_NF, sae.k, sorted=False)
        values_NK = values_NK.relu()
        x_hat_ND = sae.decode_sparse(values_NK, indices_NK)
        residual_ND = x_ND - x_hat_ND
        mse = residual_ND.pow(2).mean()

        with torch.no_grad():
            fired_F = torch.zeros_like(self.tokens_since_fired_F, dtype=torch.bool)
            fired_F[indices_NK[values_NK > 0]] = True
            self.tokens_since_fired_F += x_ND.shape[0]
            self.tokens_since_fired_F[fired_F] = 0
            dead_F = self.tokens_since_fired_F > self.config.dead_after_tokens
        num_dead = int(dead_F.sum())
        aux = torch.zeros((), device=sae.device)
        if num_dead and self.config.aux_coef > 0:
            aux_pre_NF = pre_NF.masked_fill(~dead_F, float("-inf"))
            aux_values, aux_indices = aux_pre_NF.topk(min(self.aux_k, num_dead), dim=1)
            aux_hat_ND = nnf.embedding_bag(
                aux_indices, sae.W_dec, per_sample_weights=aux_values.relu(), mode="sum"
            )
            aux = (aux_hat_ND - residual_ND.detach()).pow(2).mean()
        loss = mse + self.config.aux_coef * aux

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w_FD, g_FD = sae.W_dec, sae.W_dec.grad
            g_FD -= (g_FD * w_FD).sum(1, keepdim=True) * w_FD
        self.optimizer.step()
        sae.normalize_decoder_()
        self.step += 1

        with torch.no_grad():
            centered = (x_ND - x_ND.mean(0)).pow(2).sum()
            return {
                "step": self.step,
                "mse": float(mse),
                "aux_loss": float(aux),
                "fve": float(1 - residual_ND.pow(2).sum() / centered.clamp_min(1e-12)),
                "l0": float((values_NK > 0).sum(1).float().mean()),
                "dead_fraction": num_dead / self.config.n_latents,
            }

    def fit(
        self,
        batches: Iterable[torch.Tensor],
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Step through `batches` until `config.steps`; returns metrics every `log_every` steps."""
        history: list[dict[str, float]] = []
        config = self.config
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            disable=not progress,
            desc="train SAE",
            unit="step",
        )
        try:
            for x_ND in batches:
                if self.step >= config.steps:
                    break
                metrics = self.train_step(x_ND)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    history.append(metrics)
                    bar.set_postfix(
                        mse=f"{metrics['mse']:.4g}",
                        fve=f"{metrics['fve']:.3f}",
                        l0=f"{metrics['l0']:.1f}",
                        dead=f"{metrics['dead_fraction']:.3f}",
                    )
                bar.update(1)
                if (
                    checkpoint_dir is not None
                    and config.checkpoint_every
                    and self.step % config.checkpoint_every == 0
                ):
                    self.save_checkpoint(Path(checkpoint_dir) / f"step_{self.step:08d}")
        finally:
            bar.close()
        return history

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the SAE, optimiser state and counters into folder `path`."""
        path = Path(path)
        self.sae.save(path)
        names = [name for name, _ in self.sae.named_parameters()]
        state = self.optimizer.state_dict()
        tensors = {"tokens_since_fired": self.tokens_since_fired_F.cpu()}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optimizer.{names[index]}.{key}"] = (
                    torch.as_tensor(value).detach().cpu().contiguous()
                )
        save_file(tensors, str(path / STATE_TENSORS))
        groups = [
            {key: value for key, value in group.items() if key != "params"}
            for group in state["param_groups"]
        ]
        meta = {
            "step": self.step,
            "n_inputs": self.n_inputs,
            "b_dec_ready": self.b_dec_ready,
            "config": dataclasses.asdict(self.config),
            "param_names": names,
            "param_groups": groups,
        }
        (path / STATE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: TrainerConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> SaeTrainer:
        """Resume: weights, Adam state, step and counters from `path`.

        `config` may change the schedule (steps, lr, ...) but not the SAE's shape.
        """
        path = Path(path)
        meta = json.loads((path / STATE_JSON).read_text())
        saved = TrainerConfig(**meta["config"])
        config = config or saved
        if (config.n_latents, config.k) != (saved.n_latents, saved.k):
            raise ValueError(
                f"checkpoint {path} holds n_latents={saved.n_latents}, k={saved.k}; "
                f"the config asks for n_latents={config.n_latents}, k={config.k}"
            )
        trainer = cls(config, meta["n_inputs"], device=device)
        trainer.sae.load_state_dict(load_sae(path).state_dict())
        tensors = load_file(str(path / STATE_TENSORS), device=str(device))
        trainer.tokens_since_fired_F = tensors["tokens_since_fired"]
        names = meta["param_names"]
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, name, field = key.split(".", 2)
                state = per_param.setdefault(names.index(name), {})
                state[field] = value if field != "step" else value.cpu()
        groups = [{**group, "params": list(range(len(names)))} for group in meta["param_groups"]]
        for group in groups:
            group["lr"] = config.lr
        trainer.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        trainer.step = meta["step"]
        trainer.b_dec_ready = meta["b_dec_ready"]
        return trainer


def train_sae(
    chunks: Iterable[np.ndarray | torch.Tensor],
    config: TrainerConfig,
    n_inputs: int | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> SaeTrainer:
    """Train (or resume) a TopK SAE on row chunks [n, D] passed through the shuffle buffer.

    With `out_dir`, checkpoints go to `out_dir/checkpoints/step_N`, metrics to
    `out_dir/metrics.jsonl` and the final SAE to `out_dir/sae`. Stops at `config.steps`
    or when the chunks run out, whichever comes first (`trainer.step` says which).
    """
    if resume is not None:
        trainer = SaeTrainer.from_checkpoint(resume, config, device=device)
    else:
        if n_inputs is None:
            raise ValueError(
                "n_inputs is needed to build a new SAE (it is read from the checkpoint on resume)"
            )
        trainer = SaeTrainer(config, n_inputs, device=device)
    # A resumed run reshuffles with a different stream of permutations.
    batches: Iterator[torch.Tensor] = mixing_buffer(
        chunks, config.buffer_size, config.batch_size, seed=config.seed + trainer.step
    )
    out = Path(out_dir) if out_dir is not None else None
    history = trainer.fit(
        batches, progress=progress, checkpoint_dir=None if out is None else out / "checkpoints"
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "metrics.jsonl").open("a") as log:
            for metrics in history:
                log.write(json.dumps(metrics) + "\n")
        trainer.save_checkpoint(out / "checkpoints" / f"step_{trainer.step:08d}")
        trainer.sae.save(out / "sae")
    return trainer


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint folder was written at."""
    return int(json.loads((Path(path) / STATE_JSON).read_text())["step"])
