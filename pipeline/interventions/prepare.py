"""Everything checked and fixed once, on the driver, before any window is replayed.

The model is the store's own (same weights hash, same dtype), so the baseline pass
reproduces the captured activations. Layer names, SAE widths, latent indices and
direction widths are all checked here, where a mistake costs seconds, not a cluster.
Means for `ablate: mean` come from the store's captured rows and are written to the
output (`means.safetensors`), so every worker ablates with the same vector.

The output folder is resumable like a store: `intervention.json` holds a fingerprint of
everything that decides its bytes; a rerun with an equal fingerprint computes only the
units without a commit record, a different one is refused with each difference named.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.capture.model_setup import weights_fingerprint
from pipeline.interventions.spec import InterventionSpec
from pipeline.interventions.steps import build_controllers, file_fingerprint, load_trackers
from pipeline.model import LanguageModel, default_model_path
from pipeline.store.layout import SUCCESS, UNITS_DIR
from pipeline.store.manifest import committed_units
from pipeline.store.meta import (
    StoreMismatchError,
    fingerprint_differences,
    pipeline_version,
    write_json_atomic,
)
from pipeline.store.reader import ActivationStore

FORMAT_VERSION = 1
SPEC_JSON = "intervention.json"
MEANS_FILE = "means.safetensors"
EFFECTS_DIR = "effects"


@dataclass(frozen=True)
class PreparedRun:
    """What every worker needs: plain values, cheap to ship to Ray actors."""

    spec: InterventionSpec
    out: str
    model_path: str
    model_dtype: str | None
    causal: bool
    units: tuple[int, ...]
    pending: tuple[int, ...]
    measure: tuple[str, ...]
    unit_name_width: int


def store_model_path(store: ActivationStore) -> Path:
    """The model folder the store was captured with ('embedded:...' is the packaged MiniLM)."""
    name = store.meta["fingerprint"]["model"]
    path = default_model_path() if name.startswith("embedded:") else Path(name)
    if not (path / "config.json").exists():
        raise ValueError(
            f"the store {store.root} was captured with model {name!r}, which is not a model "
            "folder on this machine; interventions replay the store's own model"
        )
    return path


def prepare_run(spec: InterventionSpec) -> PreparedRun:
    store = ActivationStore.open(spec.store)
    if not (store.root / SUCCESS).exists():
        raise ValueError(
            f"the store {store.root} is not complete (no {SUCCESS}); rerun its capture to finish it"
        )
    fingerprint = store.meta["fingerprint"]
    model_path = store_model_path(store)
    if weights_fingerprint(model_path) != fingerprint["model_weights_sha256"]:
        raise ValueError(
            f"the weights in {model_path} differ from those the store {store.root} was captured "
            "with (sha256 mismatch); interventions must replay the same model"
        )
    model_dtype = fingerprint.get("model_dtype")
    lm = LanguageModel.from_pretrained(model_path, device="cpu", dtype=model_dtype)
    measure = spec.measure or tuple(dict.fromkeys(step.layer for step in spec.steps))
    for layer in measure:
        lm.layers.resolve(layer)
    means = store_means(store, spec)
    build_controllers(spec.steps, lm, means)  # loads and checks every SAE and direction
    load_trackers(spec.track, lm)

    num_units = store.num_units if spec.max_units is None else min(spec.max_units, store.num_units)
    out = Path(spec.out)
    identity = run_fingerprint(spec, store, measure, model_dtype)
    _open_output(out, identity, spec.overwrite)
    if means:
        save_file({layer: mean for layer, mean in means.items()}, str(out / MEANS_FILE))
    done = committed_units(out)
    return PreparedRun(
        spec=spec,
        out=str(out),
        model_path=str(model_path),
        model_dtype=model_dtype,
        causal=lm.model.get_output_embeddings() is not None,
        units=tuple(range(num_units)),
        pending=tuple(u for u in range(num_units) if u not in done),
        measure=tuple(measure),
        unit_name_width=store.meta["unit_name_width"],
    )


def store_means(store: ActivationStore, spec: InterventionSpec) -> dict[str, torch.Tensor]:
    """float32 mean [D] of every layer a step mean-ablates, over all the store's rows."""
    layers = sorted({s.layer for s in spec.steps if s.operation == "ablate" and s.ablate == "mean"})
    means = {}
    for layer in layers:
        if layer not in store.hooks:
            raise ValueError(
                f"ablate: mean at {layer} needs that layer in the store; it has {store.hooks}"
            )
        total = np.zeros(store.d(layer), dtype=np.float64)
        for _, batch in store.iter_batches(layer, 65536):
            total += batch.sum(0, dtype=np.float64)
        means[layer] = torch.from_numpy((total / max(store.num_rows, 1)).astype(np.float32))
    return means


def run_fingerprint(
    spec: InterventionSpec, store: ActivationStore, measure: tuple[str, ...], model_dtype
) -> dict[str, Any]:
    """Everything that decides the output's bytes (paths of files count by content)."""
    return {
        "store_fingerprint": store.meta["plan_fingerprint"],
        "model_weights_sha256": store.meta["fingerprint"]["model_weights_sha256"],
        "model_dtype": model_dtype,
        "steps": [_jsonable(dataclasses.asdict(step)) for step in spec.steps],
        "track": [_jsonable(dataclasses.asdict(t)) for t in spec.track],
        "measure": list(measure),
        "cumulative": spec.cumulative,
        "batch_size": spec.batch_size,
        "max_units": spec.max_units,
        "device": spec.device,
        "files": {path: file_fingerprint(path) for path in sorted(spec.files)},
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _open_output(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Create the output folder, resume a matching one, or refuse a different one."""
    spec_path = out / SPEC_JSON
    if out.exists() and overwrite:
        if not spec_path.exists() and any(out.iterdir()):
            raise ValueError(
                f"{out} is not an intervention output (no {SPEC_JSON}); refusing to delete it"
            )
        shutil.rmtree(out)
    if spec_path.exists():
        old = json.loads(spec_path.read_text())["fingerprint"]
        differences = fingerprint_differences(old, identity)
        if differences:
            raise StoreMismatchError(out, differences)
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not an intervention output; choose another out")
    (out / EFFECTS_DIR).mkdir(parents=True, exist_ok=True)
    (out / UNITS_DIR).mkdir(exist_ok=True)
    write_json_atomic(
        spec_path,
        {
            "format_version": FORMAT_VERSION,
            "pipeline_version": pipeline_version(),
            "fingerprint": identity,
        },
    )
