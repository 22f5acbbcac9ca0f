"""SAE quality over a store: mergeable partial sums per unit, metrics from the merged sums.

Every metric is a ratio of sums, so a unit's partial holds sums only (float64) and two
partials merge by adding them: units can run on any number of workers and be combined
in any grouping. The metrics (N tokens, D dims, x a stored activation, x̂ its SAE
reconstruction, z its codes):

- FVE = 1 - Σ‖x - x̂‖² / Σ‖x - μ‖², μ the per-dimension mean over all N tokens, sums over
  all tokens and dims: SAELens's `explained_variance` (sae_lens/evals.py, since PR #443,
  "conventional explained variance"). Σ‖x - μ‖² = Σ‖x‖² - N‖μ‖², so the partial keeps
  Σx [D] and Σ‖x‖², not μ.
- MSE = Σ‖x - x̂‖² / (N·D): the mean squared error per element.
- L0 = mean over tokens of #{i : z_i > 0}; its histogram counts tokens per integer L0.
- dead latents: fired on no token; dense latents: fired on more than 10% of tokens.
- replay (pipeline/stats/eval_replay.py) adds [sum, count] pairs: next-token CE loss
  clean / spliced / zero-ablated, KL(clean ‖ spliced) per token (causal LMs), or cosine
  of the final hidden states (encoders). CE loss recovered =
  (L_zero - L_spliced) / (L_zero - L_clean), SAELens's `ce_loss_score`.

Legend: N tokens, D input width, F latents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.sae import Sae
from pipeline.store.location import write_frame
from pipeline.store.output_dir import claim_fresh_output
from pipeline.store.reader import ActivationStore

DENSE_FREQUENCY = 0.1
EVAL_OUTPUTS = ("eval.json", "latents.parquet")


class EvalSums:
    """Partial sums of one or more units: activation sums and replay [sum, count] pairs."""

    def __init__(self, num_inputs: int, num_latents: int):
        self.num_inputs = num_inputs
        self.num_latents = num_latents
        self.num_tokens = 0
        self.sum_x_D = torch.zeros(num_inputs, dtype=torch.float64)
        self.sum_sq_x = 0.0  # Σ‖x‖²
        self.sum_sq_resid = 0.0  # Σ‖x - x̂‖²
        self.count_F = torch.zeros(num_latents, dtype=torch.long)
        self.sum_active_F = torch.zeros(num_latents, dtype=torch.float64)
        self.l0_hist = torch.zeros(num_latents + 1, dtype=torch.long)  # tokens per L0 value
        self.replay: dict[str, list[float]] = {}  # name -> [sum, count]
        self.num_windows = 0

    def update(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor, codes_NF: torch.Tensor) -> None:
        """Add N tokens: their activations, reconstructions and dense codes."""
        x, x_hat = x_ND.detach().double().cpu(), x_hat_ND.detach().double().cpu()
        codes = codes_NF.detach().double().cpu()
        active_NF = codes > 0
        self.num_tokens += int(x.shape[0])
        self.sum_x_D += x.sum(0)
        self.sum_sq_x += float((x * x).sum())
        self.sum_sq_resid += float(((x - x_hat) ** 2).sum())
        self.count_F += active_NF.sum(0)
        self.sum_active_F += torch.where(active_NF, codes, 0.0).sum(0)
        self.l0_hist += torch.bincount(active_NF.sum(1), minlength=self.num_latents + 1)

    def add_replay(self, name: str, total: float, count: int) -> None:
        old = self.replay.get(name, [0.0, 0])
        self.replay[name] = [old[0] + float(total), old[1] + int(count)]

    def merge(self, other: EvalSums) -> EvalSums:
        """A new partial equal to having seen both."""
        if (other.num_inputs, other.num_latents) != (self.num_inputs, self.num_latents):
            raise ValueError(
                f"cannot merge EvalSums of {other.num_inputs} inputs / {other.num_latents} "
                f"latents into {self.num_inputs} / {self.num_latents}"
            )
        merged = EvalSums(self.num_inputs, self.num_latents)
        merged.num_tokens = self.num_tokens + other.num_tokens
        merged.sum_x_D = self.sum_x_D + other.sum_x_D
        merged.sum_sq_x = self.sum_sq_x + other.sum_sq_x
        merged.sum_sq_resid = self.sum_sq_resid + other.sum_sq_resid
        merged.count_F = self.count_F + other.count_F
        merged.sum_active_F = self.sum_active_F + other.sum_active_F
        merged.l0_hist = self.l0_hist + other.l0_hist
        merged.num_windows = self.num_windows + other.num_windows
        for source in (self.replay, other.replay):
            for name, (total, count) in source.items():
                merged.add_replay(name, total, count)
        return merged

    # --- the metrics -----------------------------------------------------------------------
    def metrics(self, dense_frequency: float = DENSE_FREQUENCY) -> dict[str, Any]:
        """Every scalar, the dead/dense latent lists and the L0 histogram."""
        n = max(self.num_tokens, 1)
        total_sq_dev = self.sum_sq_x - float((self.sum_x_D**2).sum()) / n  # Σ‖x - μ‖²
        l0_values = torch.arange(self.num_latents + 1, dtype=torch.float64)
        nonzero = torch.nonzero(self.l0_hist).flatten()
        top = int(nonzero.max()) if len(nonzero) else 0
        frequency_F = self.count_F.double() / n
        dead = torch.nonzero(self.count_F == 0).flatten().tolist()
        dense = torch.nonzero(frequency_F > dense_frequency).flatten().tolist()
        result: dict[str, Any] = {
            "num_tokens": self.num_tokens,
            "num_latents": self.num_latents,
            "fve": 1.0 - self.sum_sq_resid / total_sq_dev if total_sq_dev > 0 else None,
            "mse": self.sum_sq_resid / (n * self.num_inputs),
            "l0": float((self.l0_hist.double() * l0_values).sum()) / n,
            "l0_histogram": self.l0_hist[: top + 1].tolist(),
            "dead_count": len(dead),
            "dead_latents": dead,
            "dense_frequency": dense_frequency,
            "dense_count": len(dense),
            "dense_latents": dense,
            "num_windows": self.num_windows,
        }
        result.update(replay_metrics(self.replay))
        return result

    def latents_frame(self) -> pd.DataFrame:
        """One row per latent: firing count, frequency, mean activation when active."""
        mean = self.sum_active_F / self.count_F.clamp(min=1)
        return pd.DataFrame(
            {
                "latent": range(self.num_latents),
                "num_fired": self.count_F.numpy(),
                "frequency": (self.count_F.double() / max(self.num_tokens, 1)).numpy(),
                "mean_active": torch.where(self.count_F > 0, mean, torch.nan).numpy(),
            }
        )


def replay_metrics(replay: dict[str, list[float]]) -> dict[str, Any]:
    """Means of the replay sums, and CE loss recovered where the three losses exist."""
    result: dict[str, Any] = {
        name: (total / count if count else None) for name, (total, count) in replay.items()
    }
    result.update({f"num_{name}": int(count) for name, (_, count) in replay.items()})
    clean, spliced, zero = (result.get(f"ce_loss_{k}") for k in ("clean", "spliced", "zero"))
    if None not in (clean, spliced, zero):
        gap = zero - clean
        result["ce_loss_recovered"] = (zero - spliced) / gap if gap != 0 else None
    return result


def unit_eval_sums(
    store: ActivationStore, hook: str, sae: Sae, unit: int, batch_rows: int = 4096
) -> EvalSums:
    """The activation part of one unit's partial (reconstruction and codes of its rows)."""
    start, stop = store.index.unit_rows(unit)
    sums = EvalSums(sae.n_inputs, sae.n_latents)
    with torch.no_grad():
        for lo in range(start, stop, batch_rows):
            hi = min(lo + batch_rows, stop)
            x_ND = torch.from_numpy(store.read(hook, slice(lo, hi))).to(sae.device, sae.dtype)
            codes_NF = sae.encode(x_ND)
            sums.update(x_ND, sae.decode(codes_NF), codes_NF)
    return sums


def summary_line(metrics: dict[str, Any]) -> str:
    """`FVE 0.87  L0 31.9  dead 12/1536  dense 3  CE recovered 0.91  KL 0.042`."""

    def number(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    parts = [
        f"FVE {number(metrics['fve'], 3)}",
        f"L0 {number(metrics['l0'], 1)}",
        f"dead {metrics['dead_count']}/{metrics['num_latents']}",
        f"dense {metrics['dense_count']}",
    ]
    if "ce_loss_spliced" in metrics:
        parts.append(f"CE recovered {number(metrics.get('ce_loss_recovered'), 3)}")
        parts.append(f"KL {number(metrics.get('kl_spliced'), 4)}")
    if "cos_spliced" in metrics:
        parts.append(f"cos spliced {number(metrics['cos_spliced'], 4)}")
    return "  ".join(parts)


def claim_eval_output(out: str | Path, overwrite: bool = False) -> Path:
    """Check `out` may receive eval.json and latents.parquet, before anything is computed."""
    return claim_fresh_output(out, EVAL_OUTPUTS, "eval_sae", "an evaluation", overwrite)


def write_eval(
    sums: EvalSums, provenance: dict[str, Any], out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Write OUT/eval.json (provenance, metrics) and OUT/latents.parquet; return eval.json's dict."""
    out = claim_eval_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    document = {**provenance, **sums.metrics()}
    write_frame(sums.latents_frame(), out / "latents.parquet")
    (out / "eval.json").write_text(json.dumps(document, indent=2) + "\n")
    return document
