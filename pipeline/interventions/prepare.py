"""Everything checked and fixed once, on the driver, before any window is replayed.

The model is the store's own (same weights hash, same dtype), so the baseline pass
reproduces the captured activations. Positions, layer names, SAE widths, latent indices
and direction widths are all checked here, where a mistake costs seconds, not a cluster;
what needs only the store and the SAEs' cfg.json is checked before the model is loaded.
Means for `ablate: mean` come from the store's captured rows and are written to the
output (`means.safetensors`), so every worker ablates with the same vector.

The output folder holds only the entries in OWNED_ENTRIES; one holding anything else, or
an activation store, is refused before anything is written, and `overwrite` deletes only
those entries (`pipeline.store.output_dir`). It is resumable like a store: `intervention.json`
holds a fingerprint of everything that decides its bytes; a rerun with an equal
fingerprint computes the units without a commit record and those whose record or effects
file fails the checks in `commits.py`; a different fingerprint is refused with each
difference named.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from pipeline.interventions.commits import EFFECTS_DIR, damaged_units, make_pending
from pipeline.interventions.spec import (
    InterventionSpec,
    check_latents,
    check_positions,
    step_label,
)
from pipeline.interventions.steps import (
    build_controllers,
    check_layers,
    file_fingerprint,
    load_trackers,
    sae_n_latents,
)
from pipeline.model import LanguageModel, default_model_path
from pipeline.model.remote import local_model_folder, weights_fingerprint
from pipeline.store.atomic import write_atomic
from pipeline.store.layout import STORE_JSON, SUCCESS, UNITS_DIR
from pipeline.store.location import abort_unfinished_uploads, is_url, store_path
from pipeline.store.manifest import committed_units
from pipeline.store.meta import (
    StoreMismatchError,
    fingerprint_differences,
    pipeline_version,
    write_json_atomic,
)
from pipeline.store.output_dir import OutputFolderError, claim_output_dir, is_temp_name
from pipeline.store.reader import ActivationStore

FORMAT_VERSION = 1
JOB = "intervene"
SPEC_JSON = "intervention.json"
MEANS_FILE = "means.safetensors"
SUMMARY_PARQUET = "summary.parquet"
SUMMARY_JSON = "summary.json"
# Every top-level entry an intervention output holds (prepare.py, worker.py and run.py
# write nothing else there): --overwrite removes these and only these.
OWNED_ENTRIES = frozenset(
    {SPEC_JSON, MEANS_FILE, EFFECTS_DIR, UNITS_DIR, SUMMARY_PARQUET, SUMMARY_JSON, SUCCESS}
)


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
    damaged: tuple[tuple[int, str], ...] = ()  # committed units found damaged: (unit, why)


def store_model_path(store: ActivationStore) -> Path:
    """The model folder the store was captured with ('embedded:...' is the packaged MiniLM)."""
    name = store.meta["fingerprint"]["model"]
    path = default_model_path() if name.startswith("embedded:") else local_model_folder(name)
    if not (path / "config.json").exists():
        raise ValueError(
            f"the store {store.root} was captured with model {name!r}, which is not a model "
            "folder on this machine; interventions replay the store's own model"
        )
    return path


def prepare_run(spec: InterventionSpec, verify: bool = False) -> PreparedRun:
    """Check everything, claim the output folder, and list the units still to compute.

    Order matters: the output folder is checked (nothing written) first, then every
    spec value against the store and the SAEs (no model loaded), then against the model;
    only then is the folder claimed (with `overwrite`, this job's old entries removed),
    and the committed units checked (`verify` or `spec.verify`: sha256 too).
    """
    out = store_path(spec.out)  # a folder, or an s3:// prefix
    check_output_folder(out)
    store = ActivationStore.open(spec.store)
    store.data_units()  # an unfinished store: UnfinishedStoreError with the command to finish it
    fingerprint = store.meta["fingerprint"]
    check_positions(spec, fingerprint["context_length"])
    check_latents(spec, sae_n_latents)
    check_store_layers(spec, store)
    model_path = store_model_path(store)
    if weights_fingerprint(model_path) != fingerprint["model_weights_sha256"]:
        raise ValueError(
            f"the weights in {model_path} differ from those the store {store.root} was captured "
            "with (sha256 mismatch); interventions must replay the same model"
        )
    model_dtype = fingerprint.get("model_dtype")
    lm = LanguageModel.from_pretrained(model_path, device="cpu", dtype=model_dtype)
    check_layers(spec, lm)
    measure = spec.measure or tuple(dict.fromkeys(step.layer for step in spec.steps))
    means = store_means(store, spec)
    build_controllers(spec.steps, lm, means)  # loads and checks every SAE and direction
    load_trackers(spec.track, lm)

    num_units = store.num_units if spec.max_units is None else min(spec.max_units, store.num_units)
    identity = run_fingerprint(spec, store, measure, model_dtype)
    _open_output(out, identity, spec.overwrite)
    _remove_temps(out)  # a killed run's half-written files; no worker is running yet
    if means:
        write_atomic(out / MEANS_FILE, [save({layer: mean for layer, mean in means.items()})])
    width = store.meta["unit_name_width"]
    units = tuple(range(num_units))
    done = committed_units(out) & set(units)
    damaged = damaged_units(out, sorted(done), width, verify or spec.verify)
    pending = tuple(u for u in units if u not in done or u in damaged)
    if pending:
        (out / SUCCESS).unlink(missing_ok=True)  # not finished until every unit is sound again
    for unit, problem in damaged.items():
        print(f"unit {unit}: {problem}; recomputing", file=sys.stderr, flush=True)
        make_pending(out, unit, width)
    return PreparedRun(
        spec=spec,
        out=str(out),
        model_path=str(model_path),
        model_dtype=model_dtype,
        causal=lm.model.get_output_embeddings() is not None,
        units=units,
        pending=pending,
        measure=tuple(measure),
        unit_name_width=width,
        damaged=tuple(damaged.items()),
    )


def check_store_layers(spec: InterventionSpec, store: ActivationStore) -> None:
    """A mean ablation needs its layer's mean, so the store must hold that layer."""
    for index, step in enumerate(spec.steps):
        if step.ablate == "mean" and step.layer not in store.hooks:
            raise ValueError(
                f"{step_label(index, step.name)}: ablate: mean needs the store's mean of "
                f"{step.layer}, but the store holds only {store.hooks}"
            )


def store_means(store: ActivationStore, spec: InterventionSpec) -> dict[str, torch.Tensor]:
    """float32 mean [D] of every layer a step mean-ablates, over all the store's rows."""
    layers = sorted({s.layer for s in spec.steps if s.operation == "ablate" and s.ablate == "mean"})
    means = {}
    for layer in layers:
        assert layer in store.hooks, "check_store_layers runs first"
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


def check_output_folder(out: Path) -> None:
    """Refuse, writing nothing, an `out` that is (or is inside) a store or holds others' files."""
    if (out / STORE_JSON).exists():
        raise OutputFolderError(
            f"{JOB}: the output path {out} is an activation store (it has {STORE_JSON}); "
            "nothing was written or deleted. Choose a new folder for the effects"
        )
    for parent in out.parents:
        if (parent / STORE_JSON).is_file():
            raise OutputFolderError(
                f"{JOB}: the output path {out} is inside the activation store {parent}; "
                "nothing was written or deleted. Choose a folder outside the store"
            )
    claim_output_dir(out, OWNED_ENTRIES, JOB, overwrite=False)  # only checks
    if is_url(out):
        return  # object storage: no folder permissions to check; credentials fail loudly
    nearest = next(p for p in (out, *out.parents) if p.exists())
    if nearest != out and not (nearest.is_dir() and os.access(nearest, os.W_OK | os.X_OK)):
        raise OutputFolderError(
            f"{JOB}: the output path {out} is not a writable folder ({nearest} is "
            f"{'a file' if not nearest.is_dir() else 'not writable'}); nothing was written"
        )


def _open_output(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Create the output folder, resume a matching one, or refuse a different one.

    `intervention.json` is written before anything else, so a folder of this job's
    entries without it was not made by a run of this code: refused unless `overwrite`.
    """
    check_output_folder(out)
    spec_path = out / SPEC_JSON
    if claim_output_dir(out, OWNED_ENTRIES, JOB, overwrite):
        if spec_path.is_file():
            old = _read_fingerprint(spec_path)
            differences = fingerprint_differences(old, identity)
            if differences:
                raise StoreMismatchError(out, differences)
        else:
            entries = [e.name for e in out.iterdir() if not is_temp_name(e.name)]
            if entries:
                raise OutputFolderError(
                    f"{JOB}: the output folder {out} holds {', '.join(sorted(entries))} but no "
                    f"{SPEC_JSON}, so they cannot be checked against this spec; nothing was "
                    "written or deleted. Pass --overwrite to replace them, or choose another folder"
                )
    if not spec_path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            spec_path,
            {
                "format_version": FORMAT_VERSION,
                "pipeline_version": pipeline_version(),
                "fingerprint": identity,
            },
        )
    (out / EFFECTS_DIR).mkdir(exist_ok=True)
    (out / UNITS_DIR).mkdir(exist_ok=True)


def _read_fingerprint(spec_path: Path) -> dict[str, Any]:
    try:
        fingerprint = json.loads(spec_path.read_text())["fingerprint"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise OutputFolderError(
            f"{JOB}: {spec_path} is damaged ({type(error).__name__}: {error}), so this output "
            "cannot be resumed; nothing was written or deleted. Pass --overwrite to replace it"
        ) from error
    if not isinstance(fingerprint, dict):
        raise OutputFolderError(
            f"{JOB}: {spec_path} has no fingerprint, so this output cannot be resumed; "
            "pass --overwrite to replace it"
        )
    return fingerprint


def _remove_temps(out: Path) -> None:
    """Hidden temps (`.NAME.<id>.tmp`) this job left in its own folders when killed (on
    object storage: the multipart uploads it left unfinished)."""
    if is_url(out):
        abort_unfinished_uploads(out)
        return
    for folder in (out, out / EFFECTS_DIR, out / UNITS_DIR):
        for entry in folder.iterdir():
            if is_temp_name(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
