"""Where stage-2 inputs came from: the store's model (checked by its weights hash) and
what an SAE's cfg.json says it was trained on. Shared by eval_sae, sae_stats and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.file_formats import read_json
from pipeline.interventions.prepare import store_model_path
from pipeline.model.remote import weights_fingerprint
from pipeline.store.reader import ActivationStore


def checked_model_path(store: ActivationStore) -> Path:
    """The store's model folder, refused when its weights are not those captured."""
    path = store_model_path(store)
    if weights_fingerprint(path) != store.meta["fingerprint"]["model_weights_sha256"]:
        raise ValueError(
            f"the weights in {path} differ from those the store {store.root} was captured "
            "with (sha256 mismatch); stage 2 must use the model the store was captured with"
        )
    return path


def trained_on(sae: str | Path) -> dict[str, Any]:
    """What the SAE's cfg.json says it was trained on (`jobs.train_sae` records the model,
    hook and store); empty for SAEs from elsewhere."""
    cfg = Path(sae) / "cfg.json"
    if not cfg.is_file():
        return {}
    metadata = read_json(cfg, "SAE config").get("metadata") or {}
    keys = ("model", "hook", "hook_resolved", "store", "store_plan_fingerprint", "rows_trained")
    return {key: metadata[key] for key in keys if key in metadata}
