"""Replay a store's windows through its own model: clean, SAE spliced, hook zero-ablated.

The model is the store's (same folder and weights hash, `store_model_path` and the
weights check of pipeline/interventions/prepare.py), windows come from `unit_windows` /
`batches` of `pipeline/replay.py` (shared with the intervention worker): each window that
starts in a unit, replayed whole, once. The SAE (splice on) or a zero controller is registered only for
the pass that needs it (`lm.layers.hooks`), so no hook outlives its pass.

Per batch, added to the unit's `EvalSums` as [sum, count] pairs:
- causal LMs: next-token CE loss of each pass (`effects.next_token_loss`: padding and a
  window's last position have no target; a position whose next token belongs to another
  document is also left out), KL(clean ‖ pass) = Σ_v p_clean (log p_clean - log p_pass)
  on every real token, as SAELens's `_kl`;
- encoders: cosine of the final hidden states (spliced vs clean, zero vs clean).

`eval_units` is the map step (one task's units), `evaluate_sae` the in-process driver.
Legend: B windows, T positions, V vocabulary, D width.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.hooks import FunctionController
from pipeline.interventions import effects
from pipeline.model import LanguageModel
from pipeline.progress import RowProgress
from pipeline.replay import Batch, batches, unit_windows
from pipeline.sae import Sae
from pipeline.stats.eval import EvalSums, unit_eval_sums
from pipeline.stats.provenance import checked_model_path, trained_on
from pipeline.stats.sae_stats import check_widths, open_sae
from pipeline.store.reader import ActivationStore


def layer_signature(hook: str) -> str | int:
    """A store hook name as the layer signature it was captured with ('3' was index 3)."""
    return int(hook) if hook.lstrip("-").isdigit() else hook


class Replayer:
    """One model replica with the SAE (splice on) and a zero-ablation controller."""

    def __init__(self, store: ActivationStore, hook: str, sae: Sae, device: str = "cpu"):
        self.store = store
        self.lm = LanguageModel.from_pretrained(
            checked_model_path(store),
            device=device,
            dtype=store.meta["fingerprint"].get("model_dtype"),
        )
        self.causal = self.lm.model.get_output_embeddings() is not None
        self.layer = layer_signature(hook)
        sae.check_layer(self.lm, self.layer)
        if sae.concepts.edits:
            raise ValueError(
                f"the SAE has concept edits {sae.concepts.edits}; an evaluation splices the "
                "plain reconstruction: call sae.concepts.reset() first"
            )
        self.sae = sae.to(self.lm.device)
        self.zero = FunctionController(self.layer, torch.zeros_like, hook_id="eval:zero")

    def add_unit(self, unit: int, sums: EvalSums, batch_size: int = 8) -> None:
        """Replay the windows that start in `unit` and add their sums."""
        table = unit_windows(self.store, unit)
        if table.num_rows == 0:
            return
        for batch in batches(table, batch_size, self.lm.pad_token_id):
            self._add_batch(batch, sums)
            sums.num_windows += int(batch.ids_BT.shape[0])

    def _forward(self, ids_BT, mask_BT, hook=None) -> torch.Tensor:
        hooks = () if hook is None else ((self.layer, hook),)
        with self.lm.layers.hooks(*hooks):
            outputs = self.lm.inference.forward_ids(ids_BT, mask_BT)
        return outputs.logits if self.causal else outputs.last_hidden_state

    def _add_batch(self, batch: Batch, sums: EvalSums) -> None:
        ids_BT, mask_BT = batch.ids_BT.to(self.lm.device), batch.mask_BT.to(self.lm.device)
        real_BT = mask_BT.bool()
        clean = self._forward(ids_BT, mask_BT)
        spliced, self.sae.splice = self.sae.splice, True  # the caller's SAE, restored below
        try:
            passes = {"spliced": self._forward(ids_BT, mask_BT, self.sae)}
        finally:
            self.sae.splice = spliced
        passes["zero"] = self._forward(ids_BT, mask_BT, self.zero)
        if not self.causal:
            for name, out in passes.items():
                cos_BT = effects.cosine(clean, out)[real_BT]
                sums.add_replay(f"cos_{name}", float(cos_BT.double().sum()), cos_BT.numel())
            return
        scored_BT = same_document_next(batch, ids_BT.shape).to(self.lm.device)
        logp_clean = effects.log_probs(clean)
        self._add_loss(sums, "clean", logp_clean, ids_BT, mask_BT, scored_BT)
        probs_clean = logp_clean.exp()
        for name, out in passes.items():
            logp = effects.log_probs(out)
            self._add_loss(sums, name, logp, ids_BT, mask_BT, scored_BT)
            kl_BT = torch.linalg.vecdot(probs_clean, logp_clean - logp)[real_BT]
            sums.add_replay(f"kl_{name}", float(kl_BT.double().sum()), kl_BT.numel())

    @staticmethod
    def _add_loss(sums, name, logp_BTV, ids_BT, mask_BT, scored_BT) -> None:
        loss_BT = effects.next_token_loss(logp_BTV, ids_BT, mask_BT)
        keep_BT = torch.isfinite(loss_BT) & scored_BT
        sums.add_replay(
            f"ce_loss_{name}", float(loss_BT[keep_BT].double().sum()), int(keep_BT.sum())
        )


def same_document_next(batch: Batch, shape: tuple[int, int]) -> torch.Tensor:
    """[B, T] True where the next token of the window is in the same document."""
    windows = batch.tokens["window"].to_numpy()
    positions = batch.tokens["position"].to_numpy()
    _, row_of = np.unique(windows, return_inverse=True)
    doc_BT = np.full(shape, -1, dtype=np.int64)
    doc_BT[row_of, positions] = batch.tokens["doc_id"].to_numpy()
    same_BT = np.zeros(shape, dtype=bool)
    same_BT[:, :-1] = (doc_BT[:, 1:] == doc_BT[:, :-1]) & (doc_BT[:, 1:] >= 0)
    return torch.from_numpy(same_BT)


def eval_units(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    units: Iterable[int],
    replay_units: Iterable[int] = (),
    partial: bool = False,
    device: str = "cpu",
    batch_size: int = 8,
    progress: RowProgress | None = None,
) -> EvalSums:
    """Merged partial of several units (one map task): activation sums of `units`, model
    replay of the windows starting in `replay_units`. Merged in unit order."""
    store, model = ActivationStore.open(store_path, partial), open_sae(sae)
    check_widths(store, hook, model)
    replay = list(replay_units)
    replayer = Replayer(store, hook, model, device) if replay else None
    total = EvalSums(model.n_inputs, model.n_latents)
    for unit in units:
        part = unit_eval_sums(store, hook, model, unit)
        if replayer is not None and unit in replay:
            replayer.add_unit(unit, part, batch_size)
        total = total.merge(part)
        if progress is not None:
            start, stop = store.index.unit_rows(unit)
            progress.advance(stop - start)
    return total


def plan_units(
    store_path: str | Path, partial: bool, max_units: int | None
) -> tuple[list[int], list[int]]:
    """(units whose rows count, units whose windows are replayed: the first `max_units`)."""
    if max_units is not None and max_units < 0:
        raise ValueError(f"max_units must be >= 0 (or None for all), got {max_units}")
    units = ActivationStore.open(store_path, partial).data_units()  # refuses unfinished
    return units, units if max_units is None else units[:max_units]


def provenance(
    store_path: str | Path, hook: str, sae: str | Path, replay_units: list[int]
) -> dict[str, Any]:
    store = ActivationStore.open(store_path, partial=True)
    return {
        "store": str(store_path),
        "hook": hook,
        "sae": str(sae),
        "model": store.meta["fingerprint"].get("model"),
        "model_weights_sha256": store.meta["fingerprint"].get("model_weights_sha256"),
        "replay_units": len(replay_units),
        "sae_trained_on": trained_on(sae),
    }


def evaluate_sae(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    max_units: int | None = None,
    partial: bool = False,
    device: str = "cpu",
    batch_size: int = 8,
    progress: bool = False,
) -> EvalSums:
    """Every unit's activation sums and the first `max_units` units' replay, in this process."""
    units, replay = plan_units(store_path, partial, max_units)
    store = ActivationStore.open(store_path, partial)
    rows = sum(store.index.unit_rows(u)[1] - store.index.unit_rows(u)[0] for u in units)
    meter = RowProgress(rows) if progress else None
    try:
        return eval_units(store_path, hook, sae, units, replay, partial, device, batch_size, meter)
    finally:
        if meter is not None:
            meter.close()
