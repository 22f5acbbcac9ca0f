"""Training an SAE on a stream of activation rows: TopK (Gao et al., "Scaling and
evaluating sparse autoencoders", 2024), ReLU with an L1 penalty, JumpReLU with an L0
penalty (Rajamanoharan et al., "Jumping Ahead", 2024).

The trainer takes any iterator of float32 [N, D] batches (numpy or torch) so it is
tested on synthetic data and fed from a store by `jobs/train_sae.py` alike. The three
architectures share the loop, the optimiser, the decoder treatment, the metrics and the
checkpoints; they differ in how codes are made and in the sparsity term
(`pipeline.sae.losses`). Choices:

- Decoder rows (one latent's direction) are kept unit-norm: the gradient component
  parallel to each row is removed before the Adam step and rows are renormalised after,
  so the optimiser can not buy sparsity by shrinking codes and growing directions.
- `b_dec` starts at the mean (or geometric median) of the first batch; the encoder
  starts as the decoder's transpose.
- TopK: the loss is the MSE (mean over rows and dimensions). Dead latents (no activation
  in the last `dead_after_tokens` rows; none before that many rows were seen) get the AuxK loss: the residual `x - x_hat` is
  reconstructed from the top `aux_k` dead latents alone and that reconstruction's MSE is
  added with weight `aux_coef`, which gives dead latents a gradient towards what the
  live ones miss.
- ReLU and JumpReLU: the loss is the squared error summed over dimensions, averaged over
  rows, plus `coefficient * penalty` per row (L1 of the codes, or the number of active
  latents). That is SAELens's and the paper's scaling, so a coefficient means the same
  there and here for activations of the same scale. The coefficient may ramp up linearly
  over `sparsity_warmup_steps`.
- JumpReLU thresholds are trained directly, not through their log as in the paper's
  pseudo-code: they start at `threshold_init` and are clamped to >= 0 after each step.
  The SAE's own `threshold` parameter is then the trained value, so the checkpoint and
  the saved folder are the usual ones (SAELens names, `threshold`) and a resume restores
  it exactly, with its Adam moments; a threshold of 0 stays representable.
- The `dead_fraction` metric counts a latent dead when it fired on none of the last
  min(`dead_after_tokens`, rows seen so far) rows: with a window longer than the run, a
  latent that never fired is still reported (before, short runs always reported 0).
  `fit` prints the window it uses once, at the start.
- Checkpoints are folders: the SAE itself (`cfg.json` + `sae_weights.safetensors`,
  loadable with `load_sae`), and `trainer_state.safetensors` + `trainer_state.json`
  with the Adam moments, the dead-latent counters, the step and the config. No pickle.

Legend: N rows in a batch, D input width, F latents, K active latents per row.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pipeline.file_formats import read_json, read_safetensors
from pipeline.progress import StepProgress
from pipeline.sae.architectures import JumpReluSae, ReluSae, TopKSae
from pipeline.sae.base import Sae, load_sae
from pipeline.sae.buffer import mixing_buffer
from pipeline.sae.io import CONFIG_FILE, write_json, write_safetensors
from pipeline.sae.losses import auxk_loss, jumprelu, l0_penalty, l1_penalty
from pipeline.sae.select import topk_rows
from pipeline.sae.train_config import TrainerConfig
from pipeline.store.location import append_lines, make_folder, store_path

__all__ = ["SaeTrainer", "TrainerConfig", "checkpoint_step", "geometric_median", "train_sae"]

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
_SAE_CLASSES: dict[str, type[Sae]] = {"topk": TopKSae, "relu": ReluSae, "jumprelu": JumpReluSae}


class _Terms(NamedTuple):
    """What one architecture's forward pass hands the shared step."""

    loss: torch.Tensor  # what backward runs on
    x_hat_ND: torch.Tensor
    active: torch.Tensor  # bool, one row per input row; its row sums are the L0s
    extras: dict[str, float]  # the architecture's own metrics (aux_loss, sparsity_loss)


def geometric_median(x_ND: torch.Tensor, iterations: int = 30, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to the rows."""
    median_D = x_ND.mean(0)
    for _ in range(iterations):
        weights_N = 1.0 / (x_ND - median_D).norm(dim=1).clamp_min(eps)
        median_D = (weights_N[:, None] * x_ND).sum(0) / weights_N.sum()
    return median_D


class SaeTrainer:
    """One SAE, its Adam optimiser and the bookkeeping to train it step by step."""

    def __init__(self, config: TrainerConfig, n_inputs: int, device: str | torch.device = "cpu"):
        self.config = config
        self.n_inputs = n_inputs
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.sae = _new_sae(config, n_inputs, device)
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr)
        self.step = 0
        self.b_dec_ready = config.b_dec_init == "zeros"
        self.tokens_since_fired_F = torch.zeros(config.n_latents, dtype=torch.long, device=device)
        self.rows_seen = 0  # rows trained on, over every run of a resumed training
        # With `normalize_activations`: the constant rows are multiplied by (first batch).
        self.input_scale: float | None = None

    @property
    def aux_k(self) -> int:
        return self.config.aux_k or max(1, self.n_inputs // 2)

    @property
    def sparsity_coefficient(self) -> float:
        """The penalty's weight at the current step (after the linear warm-up)."""
        warmup = self.config.sparsity_warmup_steps
        ramp = min(1.0, (self.step + 1) / warmup) if warmup else 1.0
        return self.config.sparsity_coefficient * ramp

    @torch.no_grad()
    def _init_b_dec(self, x_ND: torch.Tensor) -> None:
        center = (
            geometric_median(x_ND) if self.config.b_dec_init == "geometric_median" else x_ND.mean(0)
        )
        self.sae.b_dec.copy_(center)
        self.b_dec_ready = True

    def _topk_loss(self, x_ND: torch.Tensor, pre_NF: torch.Tensor) -> _Terms:
        """TopK: MSE + aux_coef * AuxK."""
        values_NK, indices_NK = topk_rows(pre_NF, self.sae.k, sorted=False)
        values_NK = values_NK.relu()
        x_hat_ND = self.sae.decode_sparse(values_NK, indices_NK)
        residual_ND = x_ND - x_hat_ND
        dead_F = self._update_dead(indices_NK[values_NK > 0], x_ND.shape[0])
        aux = pre_NF.new_zeros(())
        if self.config.aux_coef > 0:
            aux = auxk_loss(pre_NF, residual_ND, self.sae.W_dec, dead_F, self.aux_k)
        loss = residual_ND.pow(2).mean() + self.config.aux_coef * aux
        return _Terms(loss, x_hat_ND, values_NK > 0, {"aux_loss": float(aux.detach())})

    def _penalised_loss(self, x_ND: torch.Tensor, pre_NF: torch.Tensor) -> _Terms:
        """ReLU/JumpReLU: summed squared error + coefficient * (L1 or L0) per row."""
        z_NF = pre_NF.relu()
        if self.config.architecture == "jumprelu":
            threshold_F, bandwidth = self.sae.threshold, self.config.bandwidth
            codes_NF = jumprelu(z_NF, threshold_F, bandwidth)
            penalty = l0_penalty(z_NF, threshold_F, bandwidth)
        else:
            codes_NF = z_NF
            penalty = l1_penalty(codes_NF)
        x_hat_ND = self.sae.decode(codes_NF)
        active_NF = codes_NF > 0
        self._update_dead(active_NF.any(0), x_ND.shape[0])
        sparsity = self.sparsity_coefficient * penalty
        loss = (x_ND - x_hat_ND).pow(2).sum(1).mean() + sparsity
        return _Terms(loss, x_hat_ND, active_NF, {"sparsity_loss": float(sparsity.detach())})

    @torch.no_grad()
    def _update_dead(self, fired: torch.Tensor, num_rows: int) -> torch.Tensor:
        """Reset the counters of the latents `fired` (indices, or a mask [F]); the AuxK dead
        mask [F] (no firing in the last `dead_after_tokens` rows: none early in a run)."""
        self.tokens_since_fired_F += num_rows
        self.tokens_since_fired_F[fired] = 0
        return self.tokens_since_fired_F > self.config.dead_after_tokens

    @property
    def dead_window(self) -> int:
        """Rows a latent must go without firing to count in `dead_fraction`:
        min(`dead_after_tokens`, rows seen so far)."""
        return min(self.config.dead_after_tokens, self.rows_seen)

    def dead_fraction(self) -> float:
        """Share of latents that fired on none of the last `dead_window` rows."""
        if self.rows_seen == 0:
            return 0.0
        dead_F = self.tokens_since_fired_F >= self.dead_window
        return int(dead_F.sum()) / self.config.n_latents

    def train_step(self, x_ND: torch.Tensor) -> dict[str, float]:
        """One Adam step on rows [N, D]; returns the step's metrics."""
        sae = self.sae
        x_ND = torch.as_tensor(x_ND).to(device=sae.device, dtype=sae.dtype)
        if self.config.normalize_activations:
            if self.input_scale is None:
                mean_square = float(x_ND.double().pow(2).sum(1).mean())
                self.input_scale = (self.n_inputs / max(mean_square, 1e-30)) ** 0.5
            x_ND = x_ND * self.input_scale
        if not self.b_dec_ready:
            self._init_b_dec(x_ND)
        self.rows_seen += x_ND.shape[0]
        pre_NF = sae.pre_activations(x_ND)
        compute = self._topk_loss if self.config.architecture == "topk" else self._penalised_loss
        loss, x_hat_ND, active, extras = compute(x_ND, pre_NF)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w_FD, g_FD = sae.W_dec, sae.W_dec.grad
            g_FD -= (g_FD * w_FD).sum(1, keepdim=True) * w_FD
        self.optimizer.step()
        sae.normalize_decoder_()
        if self.config.architecture == "jumprelu":
            with torch.no_grad():
                sae.threshold.clamp_(min=0)
        self.step += 1

        with torch.no_grad():
            residual_ND = x_ND - x_hat_ND
            centered = (x_ND - x_ND.mean(0)).pow(2).sum()
            return {
                "step": self.step,
                "mse": float(residual_ND.pow(2).mean()),
                **extras,
                "fve": float(1 - residual_ND.pow(2).sum() / centered.clamp_min(1e-12)),
                "l0": float(active.sum(1).float().mean()),
                # not fired in min(dead_after_tokens, rows seen) rows (`dead_window`)
                "dead_fraction": self.dead_fraction(),
            }

    def fit(
        self,
        batches: Iterable[torch.Tensor],
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        on_checkpoint: Callable[[int, Sae], None] | None = None,
    ) -> list[dict[str, float]]:
        """Step through `batches` until `config.steps`; returns metrics every `log_every` steps.

        With `progress`: a bar on a terminal, else a line per tenth of the steps (stderr).
        `on_checkpoint(step, sae)` is called after each checkpoint is saved, with the SAE
        as it applies to raw inputs (an evaluation at checkpoints, for example).
        """
        history: list[dict[str, float]] = []
        config = self.config
        if progress:
            print(
                f"dead latents: not fired in the last {config.dead_after_tokens:,} rows "
                "(or all rows seen, if fewer)",
                file=sys.stderr,
                flush=True,
            )
        bar = StepProgress(config.steps, self.step, desc="train SAE", enabled=progress)
        try:
            for x_ND in batches:
                if self.step >= config.steps:
                    break
                metrics = self.train_step(x_ND)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    history.append(metrics)
                bar.update(
                    1,
                    {
                        "mse": f"{metrics['mse']:.4g}",
                        "fve": f"{metrics['fve']:.3f}",
                        "l0": f"{metrics['l0']:.1f}",
                        "dead": f"{metrics['dead_fraction']:.3f}",
                    },
                )
                if (
                    checkpoint_dir is not None
                    and config.checkpoint_every
                    and self.step % config.checkpoint_every == 0
                ):
                    self.save_checkpoint(store_path(checkpoint_dir) / f"step_{self.step:08d}")
                    if on_checkpoint is not None:
                        on_checkpoint(self.step, self.sae_for_raw_inputs())
        finally:
            bar.close()
        return history

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the SAE, optimiser state and counters into folder `path`.

        The folder's SAE is the one being trained: with `normalize_activations` it reads
        rescaled rows; `from_checkpoint(path).sae_for_raw_inputs()` gives the usable one
        (the final `out/sae` of `train_sae` is already folded).
        """
        path = store_path(path)
        self.sae.save(path)
        names = [name for name, _ in self.sae.named_parameters()]
        state = self.optimizer.state_dict()
        tensors = {"tokens_since_fired": self.tokens_since_fired_F.cpu()}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optimizer.{names[index]}.{key}"] = (
                    torch.as_tensor(value).detach().cpu().contiguous()
                )
        write_safetensors(path / STATE_TENSORS, tensors)
        groups = [
            {key: value for key, value in group.items() if key != "params"}
            for group in state["param_groups"]
        ]
        meta = {
            "step": self.step,
            "rows_seen": self.rows_seen,
            "n_inputs": self.n_inputs,
            "b_dec_ready": self.b_dec_ready,
            "input_scale": self.input_scale,
            "config": dataclasses.asdict(self.config),
            "param_names": names,
            "param_groups": groups,
        }
        write_json(path / STATE_JSON, meta)  # last: a folder with it is a whole checkpoint
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
        path = store_path(path)
        meta = read_json(path / STATE_JSON, "trainer checkpoint state")
        saved = TrainerConfig(**meta["config"])
        config = config or saved
        shape = ("architecture", "n_latents", "k")
        if any(getattr(config, name) != getattr(saved, name) for name in shape):
            held = ", ".join(f"{name}={getattr(saved, name)!r}" for name in shape)
            asked = ", ".join(f"{name}={getattr(config, name)!r}" for name in shape)
            raise ValueError(f"checkpoint {path} holds {held}; the config asks for {asked}")
        trainer = cls(config, meta["n_inputs"], device=device)
        trainer.sae.load_state_dict(load_sae(path).state_dict())
        tensors = read_safetensors(path / STATE_TENSORS, str(device), "trainer checkpoint")
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
        trainer.rows_seen = meta.get("rows_seen", trainer.step * saved.batch_size)
        trainer.b_dec_ready = meta["b_dec_ready"]
        trainer.input_scale = meta.get("input_scale")
        return trainer

    def sae_for_raw_inputs(self) -> Sae:
        """The SAE as it applies to unscaled activations (the trained one when there is no
        `input_scale`).

        Trained on `c x`, the encoder computes `(c x - b_dec') W_enc' + b_enc'`, which is
        `(x - b_dec'/c) (c W_enc') + b_enc'`; the decoder's `z W_dec' + b_dec'` is `c` times
        `z (W_dec'/c) + b_dec'/c`. So the folded SAE has the same codes (and thresholds) on
        `x` as the trained one on `c x`, and reconstructs `x` on `x`'s scale.
        """
        if self.input_scale is None:
            return self.sae
        folded = _new_sae(self.config, self.n_inputs, self.sae.device)
        folded.load_state_dict(self.sae.state_dict())
        scale = self.input_scale
        with torch.no_grad():
            folded.W_enc.mul_(scale)
            folded.b_dec.div_(scale)
            folded.W_dec.div_(scale)
        return folded


def _new_sae(config: TrainerConfig, n_inputs: int, device: str | torch.device) -> Sae:
    sae_cls = _SAE_CLASSES[config.architecture]
    if config.architecture == "topk":
        return sae_cls(config.n_latents, n_inputs, config.k, device=device)
    sae = sae_cls(config.n_latents, n_inputs, device=device)
    if config.architecture == "jumprelu":
        with torch.no_grad():
            sae.threshold.fill_(config.threshold_init)
    return sae


def train_sae(
    chunks: Iterable[np.ndarray | torch.Tensor],
    config: TrainerConfig,
    n_inputs: int | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    metadata: dict | None = None,
    on_checkpoint: Callable[[int, Sae], None] | None = None,
) -> SaeTrainer:
    """Train (or resume) an SAE on row chunks [n, D] passed through the shuffle buffer.

    With `out_dir`, checkpoints go to `out_dir/checkpoints/step_N`, metrics to
    `out_dir/metrics.jsonl` and the final SAE to `out_dir/sae`. Stops at `config.steps`
    or when the chunks run out, whichever comes first (`trainer.step` says which).
    The final SAE's `cfg.json` "metadata" holds `metadata` (where the rows came from),
    the rows trained on and the trainer config. `on_checkpoint(step, sae)` runs after every
    checkpoint, the final one included.
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
    out = store_path(out_dir) if out_dir is not None else None
    history = trainer.fit(
        batches,
        progress=progress,
        checkpoint_dir=None if out is None else out / "checkpoints",
        on_checkpoint=on_checkpoint,
    )
    if out is not None:
        make_folder(out)
        append_lines(out / "metrics.jsonl", [json.dumps(metrics) for metrics in history])
        final = out / "checkpoints" / f"step_{trainer.step:08d}"
        already_evaluated = final.exists() and on_checkpoint is not None
        trainer.save_checkpoint(final)
        if on_checkpoint is not None and not already_evaluated:
            on_checkpoint(trainer.step, trainer.sae_for_raw_inputs())
        trainer.sae_for_raw_inputs().save(out / "sae")
        provenance = {
            **(metadata or {}),
            "rows_trained": trainer.rows_seen,
            "steps": trainer.step,
            "trainer_config": dataclasses.asdict(trainer.config),
        }
        _add_metadata(out / "sae", provenance)
    return trainer


def _add_metadata(folder: Path, metadata: dict) -> None:
    """Merge `metadata` into the "metadata" object of the `cfg.json` `Sae.save` wrote."""
    cfg_path = folder / CONFIG_FILE
    cfg = read_json(cfg_path, "SAE config")
    cfg["metadata"] = {**cfg.get("metadata", {}), **metadata}
    write_json(cfg_path, cfg)


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint folder was written at."""
    state = store_path(path) / STATE_JSON
    if not state.is_file():
        raise FileNotFoundError(2, "not a checkpoint folder (no trainer state)", str(state))
    return int(read_json(state, "trainer checkpoint state")["step"])
