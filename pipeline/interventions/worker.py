"""Replay one store unit's windows with and without the cascade, and commit its effects.

A unit here is the set of windows that *start* in a store unit, so every window is
replayed whole, exactly once, and units are as many as the store's. For each batch of
windows: one baseline pass (every step off), then one pass per stage (the first n steps
on). Detectors at the measured and tracked layers are registered after the controllers,
so they see a layer's output as it leaves the layer, interventions included: a tracked
SAE downstream reads what the cascade upstream made of its input.

This module runs the passes and computes the effects; reading and batching the windows
is `pipeline/replay.py`, the effect measures `effects.py`, and writing a unit's effects
file and commit record `commits.py` (through the store's one commit protocol). The
worker's hooks stay registered on its model for its life and are removed by `close()`
(a `with` block does it), so a notebook's model is left as it was. Free of Ray: the
actor only wraps it.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load

from pipeline import faults
from pipeline.hooks import Detector
from pipeline.interventions import effects
from pipeline.interventions.commits import add_sums, commit_unit, effects_rows
from pipeline.interventions.prepare import MEANS_FILE, PreparedRun
from pipeline.interventions.steps import build_controllers, load_trackers
from pipeline.model import LanguageModel
from pipeline.replay import Batch, batches, stored_rows, unit_windows
from pipeline.store.location import store_path
from pipeline.store.reader import ActivationStore


class LatestOutput(Detector):
    """Keeps a reference to the layer's latest output, on its device (read within the batch)."""

    def process_activations(self, module, input, output) -> None:
        self.tensor_metadata["activations"] = output.detach()


@dataclass
class Baseline:
    """One batch without interventions: what every stage of it is compared with."""

    ids_BT: torch.Tensor
    mask_BT: torch.Tensor
    out: torch.Tensor  # logits (causal LMs) or the last hidden state
    acts: dict[str, torch.Tensor]  # watched layers' outputs
    codes: dict[str, torch.Tensor]  # tracked latents [B, T, L] per tracker
    next_token: effects.NextTokenBaseline | None


class InterventionWorker:
    """One model replica with the cascade's controllers and the measuring detectors."""

    def __init__(self, run: PreparedRun, worker_id: str = "w0"):
        self.run = run
        self.spec = run.spec
        self.worker_id = worker_id
        if self.spec.torch_threads:
            torch.set_num_threads(self.spec.torch_threads)
        self.store = ActivationStore.open(self.spec.store)
        self.lm = LanguageModel.from_pretrained(
            run.model_path, device=self.spec.device, dtype=run.model_dtype
        )
        means_path = store_path(run.out) / MEANS_FILE
        means = load(means_path.read_bytes()) if means_path.exists() else {}  # no pickle
        self.controllers = build_controllers(self.spec.steps, self.lm, means)
        self.trackers = load_trackers(self.spec.track, self.lm)
        watched = dict.fromkeys([*run.measure, *(t.layer for t in self.spec.track)])
        self.detectors = {layer: LatestOutput(layer) for layer in watched}
        self._vocab = effects.VocabBuffers()  # the causal effects' [B, T, V] tensors
        self._hook_ids: list[str] = []
        self._attach()

    def _attach(self) -> None:
        """Register the controllers, then the detectors (so they see the edits)."""
        self._hook_ids = [
            self.lm.layers.register_hook(hook.layer_signature, hook)
            for hook in [*self.controllers, *self.detectors.values()]
        ]

    def close(self) -> None:
        """Remove this worker's hooks from the model (safe to call twice)."""
        while self._hook_ids:
            self.lm.layers.unregister_hook(self._hook_ids.pop())

    @contextmanager
    def hooks_removed(self):
        """The worker's model as loaded, without its hooks, for the block: bare passes on
        the same replica (what the interventions benchmark compares with)."""
        self.close()
        try:
            yield self.lm
        finally:
            self._attach()

    def __enter__(self) -> InterventionWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- one unit --------------------------------------------------------------------------
    def process(self, unit: int, attempt: int = 0) -> dict:
        """Replay one unit and commit its effects; returns the commit record.

        The unit's windows and the stored rows the replay check compares with are read
        first, then the model runs. (Overlapping one unit's reads and writes with
        another's forward passes in a second thread was measured on a GPU and gained
        nothing: the two contend for the GIL. See docs/performance.md.)
        """
        timing = dict.fromkeys(("read_s", "forward_s", "replay_s", "effects_s"), 0.0)
        with self._timed(timing, "read_s", sync=False):
            unit_batches = batches(
                unit_windows(self.store, unit), self.spec.batch_size, self.lm.pad_token_id
            )
            stored = [self._stored_first_window(batch) for batch in unit_batches]
        parts, sums, replay = [], {}, {}
        for batch_index, (batch, stored_window) in enumerate(
            zip(unit_batches, stored, strict=True)
        ):
            faults.at_batch(unit, batch_index)  # tests only (pipeline/faults.py)
            per_stage = self._batch_effects(batch, stored_window, replay, timing)
            for stage, columns in per_stage.items():
                parts.append(effects_rows(batch.tokens, stage, columns))
                add_sums(sums.setdefault(str(stage), {}), columns)
        fields = {
            "sums": sums,
            "replay_max_abs_error": replay,
            "attempt": {
                "worker": self.worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "attempt": attempt,
            },
        }
        table = pa.concat_tables(parts) if parts else None
        return commit_unit(self.run.out, unit, self.run.unit_name_width, table, fields, timing)

    @contextmanager
    def _timed(self, timing: dict, name: str, sync: bool = True):
        """Add the block's seconds to `timing[name]` (synchronising a GPU first, so
        queued kernels are charged to the block that queued them)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            if sync and self.lm.device.type == "cuda":
                torch.cuda.synchronize(self.lm.device)
            timing[name] += time.perf_counter() - began

    def _batch_effects(
        self, batch: Batch, stored: dict[str, torch.Tensor], replay: dict, timing: dict
    ) -> dict[int, dict[str, np.ndarray]]:
        """{stage (1-based): {column: values over the batch's real tokens}}.

        `replay` collects, per measured layer the store holds, the largest difference
        between the baseline pass and the stored activations (a check that the replay
        reproduces the capture: zero up to the store's dtype).
        """
        device = self.lm.device
        ids_BT, mask_BT = batch.ids_BT.to(device), batch.mask_BT.to(device)
        with self._timed(timing, "forward_s"):
            out, acts = self._forward(ids_BT, mask_BT, enabled=0)
        with self._timed(timing, "replay_s"):
            for layer, rows in stored.items():
                computed = acts[layer][0, : rows.shape[0]].float()
                error = (computed - rows.to(computed.device)).abs().max().item()
                replay[layer] = max(replay.get(layer, 0.0), error)
        with self._timed(timing, "effects_s"):
            base = Baseline(
                ids_BT=ids_BT,
                mask_BT=mask_BT,
                out=out,
                acts=acts,
                codes=self._tracked(acts),
                next_token=effects.next_token_baseline(out, ids_BT, mask_BT, self._vocab)
                if self.run.causal
                else None,
            )
        per_stage = {}
        for stage, enabled in enumerate(self.spec.stage_sizes, start=1):
            with self._timed(timing, "forward_s"):
                out, acts = self._forward(ids_BT, mask_BT, enabled=enabled)
            with self._timed(timing, "effects_s"):
                per_stage[stage] = self._stage_columns(base, out, acts)
        return per_stage

    def _stored_first_window(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The store's rows of the batch's first window, per measured layer it holds.

        One window per batch is enough to catch a different model, dtype or tokenization
        (they differ everywhere) and keeps the check's store reads to a small fraction of
        the run's (reading every row cost more than the forward passes on a GPU).
        """
        length = int(batch.mask_BT[0].sum())
        start = int(batch.tokens["row"][0].as_py())
        return {
            layer: stored_rows(self.store, layer, start, start + length)
            for layer in self.run.measure
            if layer in self.store.hooks
        }

    def _stage_columns(self, base: Baseline, out, acts) -> dict[str, np.ndarray]:
        """One stage's effect columns over the batch's real tokens."""
        columns: dict[str, torch.Tensor] = {}
        if base.next_token is not None:
            columns.update(
                effects.next_token_effects(
                    base.next_token, out, base.ids_BT, base.mask_BT, self._vocab
                )
            )
        else:
            columns["output_cos"] = effects.cosine(base.out, out)
            columns["output_change"] = effects.relative_change(base.out, out)
        for layer in self.run.measure:
            columns[f"change_{layer}"] = effects.relative_change(base.acts[layer], acts[layer])
        for name, codes in self._tracked(acts).items():
            for i, latent in enumerate(self._tracker(name).latents):
                columns[f"{name}_{latent}_base"] = base.codes[name][..., i]
                columns[f"{name}_{latent}"] = codes[..., i]
        real_BT = base.mask_BT.bool()
        return {k: v[real_BT].cpu().numpy() for k, v in columns.items()}

    def _forward(self, ids_BT, mask_BT, enabled: int):
        """Model output (logits or last hidden state) and the watched layers' outputs."""
        for index, controller in enumerate(self.controllers):
            controller.enable() if index < enabled else controller.disable()
        try:
            outputs = self.lm.inference.forward_ids(ids_BT, mask_BT)
        finally:
            for controller in self.controllers:
                controller.disable()
        main = outputs.logits if self.run.causal else outputs.last_hidden_state
        acts = {layer: d.get_captured() for layer, d in self.detectors.items()}
        return main, acts

    def _tracked(self, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each tracker's chosen latents [B, T, L] from its layer's output."""
        result = {}
        for tracker in self.spec.track:
            sae = self.trackers[tracker.name]
            with torch.no_grad():
                codes = sae.encode(acts[tracker.layer].to(sae.dtype))
            result[tracker.name] = codes[..., list(tracker.latents)].float()
        return result

    def _tracker(self, name: str):
        return next(t for t in self.spec.track if t.name == name)
