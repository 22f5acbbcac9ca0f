"""YAML and `--set` overrides (or a dict) into a checked `InterventionSpec`.

The one place text becomes an intervention spec. Every value is checked with its type
(a bool is not an int, a float is not an int, a latent key "7" is not 7), unknown keys
are refused with the known ones listed, and every error starts with where the value is:
`steps[1] (name 'zero'): positions[0] must be an integer >= 0, got 1.0 (float)`. Paths are
made absolute (Ray workers run in other directories) and checked to exist.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from pipeline.checks import check_bool, check_int
from pipeline.config_files import read_values
from pipeline.interventions.spec import (
    OPERATIONS,
    Direction,
    InterventionSpec,
    Step,
    Tracker,
    step_label,
    tracker_label,
)
from pipeline.ray_config import ray_config_from_dict, refuse_top_level_ray_keys
from pipeline.store.location import resolve, store_path

_TOP_KEYS = [f.name for f in dataclasses.fields(InterventionSpec) if f.name != "files"]
_STEP_KEYS = {"name", "layer", "positions", "concepts", "splice", "coefficient", *OPERATIONS}
_DIRECTION_KEYS = {"sae", "latent", "vector", "key"}
_TRACK_KEYS = {"name", "layer", "sae", "latents"}
_CONCEPT_KINDS = ("scale", "set")
_LAYER = "a hook name such as 'layer_3'"


def load_spec(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> InterventionSpec:
    """The YAML file (if any), then `--set key=value` overrides, into a checked spec."""
    return spec_from_dict(read_values(path, overrides))


def spec_from_dict(values: dict[str, Any]) -> InterventionSpec:
    values = dict(values)
    refuse_top_level_ray_keys(values)
    _check_keys("intervention spec", values, _TOP_KEYS)
    values["ray"] = ray_config_from_dict(values.get("ray"))
    for required in ("store", "out", "steps"):
        if values.get(required) in (None, "", []):
            raise ValueError(f"the intervention spec needs {required!r}")
    raw_steps = values.pop("steps")
    if not isinstance(raw_steps, list):
        raise ValueError(
            f"steps must be a list of steps (one mapping each), got {_shown(raw_steps)}"
        )
    steps = tuple(_step(i, raw) for i, raw in enumerate(raw_steps))
    _check_unique([step_label(i, s.name) for i, s in enumerate(steps)], [s.name for s in steps])
    raw_track = values.pop("track", None)
    if raw_track is None:
        raw_track = []
    if not isinstance(raw_track, list):
        raise ValueError(
            f"track must be a list of trackers (one mapping each), got {_shown(raw_track)}"
        )
    track = tuple(_tracker(i, raw) for i, raw in enumerate(raw_track))
    _check_unique([tracker_label(i, t.name) for i, t in enumerate(track)], [t.name for t in track])
    values["store"] = _path("", "store", values["store"])
    values["out"] = _path("", "out", values["out"])
    spec = InterventionSpec(
        steps=steps, track=track, measure=_measure(values.pop("measure", None)), **values
    )
    return dataclasses.replace(spec, files=_referenced_files(spec))


def absolute(path: Any) -> str:
    """Paths are fixed before a job starts: Ray workers run in other directories (a URL
    such as s3://bucket/store is kept as given)."""
    return resolve(str(path))


# --- parsing --------------------------------------------------------------------------------
def _step(index: int, raw: Any) -> Step:
    where = step_label(index, None)
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where} must be a mapping such as {{layer: layer_1, scale: 0.5}}, got {_shown(raw)}"
        )
    operations = [op for op in OPERATIONS if op in raw]
    name = raw.get("name")
    if name is not None:
        _text(where, "name", name)
    elif len(operations) == 1 and isinstance(raw.get("layer"), str):
        name = f"{operations[0]}@{raw['layer']}"
    where = step_label(index, name)
    _check_keys(where, raw, _STEP_KEYS)
    if len(operations) != 1:
        raise ValueError(
            f"{where} must have exactly one of {', '.join(OPERATIONS)}; it has {operations or 'none'}"
        )
    operation = operations[0]
    if raw.get("layer") is None:
        raise ValueError(f"{where} needs a layer (a hook name such as layer_3)")
    layer = _text(where, "layer", raw["layer"], _LAYER)
    fields: dict[str, Any] = {"name": name, "layer": layer, "operation": operation}
    if raw.get("positions") is not None:
        fields["positions"] = _positions(where, raw["positions"])
    misplaced = [
        key
        for key, allowed in (("concepts", "sae"), ("splice", "sae"), ("coefficient", "add"))
        if key in raw and operation != allowed
    ]
    if misplaced:
        raise ValueError(f"{where}: {misplaced} do not apply to a {operation} step")
    if operation == "sae":
        fields["sae"] = _existing(where, "sae", raw["sae"], "sae")
        fields["concepts"] = _concepts(where, raw.get("concepts"))
        fields["splice"] = _boolean(where, "splice", raw.get("splice", False))
        if not fields["concepts"] and not fields["splice"]:
            raise ValueError(
                f"{where}: an SAE step without concepts or splice changes nothing; "
                "add concepts: {LATENT: {scale: S}} or splice: true"
            )
    elif operation == "scale":
        fields["factor"] = _number(where, "scale", raw["scale"])
    elif operation in ("add", "project_out"):
        fields["direction"] = _direction(where, operation, raw[operation])
        fields["coefficient"] = _number(where, "coefficient", raw.get("coefficient", 1.0))
    else:
        if raw["ablate"] not in ("zero", "mean"):
            raise ValueError(
                f"{where}: ablate must be 'zero' or 'mean', got {_shown(raw['ablate'])}"
            )
        fields["ablate"] = raw["ablate"]
    return Step(**fields)


def _positions(where: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            f"{where}: positions must be a non-empty list of positions within each window, "
            f"got {_shown(raw)}"
        )
    # From a window's first token: windows are right-padded, so counting from the end
    # would name a different token in each window.
    return tuple(_integer(where, f"positions[{i}]", p, 0) for i, p in enumerate(raw))


def _concepts(where: str, raw: Any) -> tuple[tuple[int, str, float], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: concepts must map latent -> {{scale: S}} or {{set: V}}, got {_shown(raw)}"
        )
    edits = []
    for latent, edit in raw.items():
        _integer(where, "concepts: a latent index", latent, 0)
        key = f"concepts[{latent}]"
        if not isinstance(edit, dict) or len(edit) != 1 or next(iter(edit)) not in _CONCEPT_KINDS:
            raise ValueError(
                f"{where}: {key} must be {{scale: S}} or {{set: V}}, got {_shown(edit)}"
            )
        ((kind, number),) = edit.items()
        edits.append((latent, kind, _number(where, f"{key}.{kind}", number)))
    return tuple(sorted(edits))


def _direction(where: str, operation: str, raw: Any) -> Direction:
    usage = "a direction is {sae: DIR, latent: N} or {vector: FILE, key: NAME}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {operation}: {usage}, got {_shown(raw)}")
    _check_keys(f"{where}: {operation}", raw, _DIRECTION_KEYS)
    if "sae" in raw and "latent" in raw and "vector" not in raw and "key" not in raw:
        return Direction(
            sae=_existing(where, f"{operation}.sae", raw["sae"], "sae"),
            latent=_integer(where, f"{operation}.latent", raw["latent"], 0),
        )
    if "vector" in raw and "sae" not in raw and "latent" not in raw:
        key = raw.get("key")
        return Direction(
            vector=_existing(where, f"{operation}.vector", raw["vector"], "vector"),
            key=None if key is None else _text(where, f"{operation}.key", key),
        )
    raise ValueError(f"{where}: {operation}: {usage}, got {_shown(raw)}")


def _tracker(index: int, raw: Any) -> Tracker:
    where = tracker_label(index, None)
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where} must be a mapping {{name, layer, sae, latents}}, got {_shown(raw)}"
        )
    name = raw.get("name")
    name = f"t{index}" if name is None else _text(where, "name", name)
    where = tracker_label(index, name)
    _check_keys(where, raw, _TRACK_KEYS)
    missing = [k for k in ("layer", "sae", "latents") if raw.get(k) is None]
    if missing:
        raise ValueError(f"{where} needs {missing}")
    latents = raw["latents"]
    if not isinstance(latents, list) or not latents:
        raise ValueError(
            f"{where}: latents must be a non-empty list of latent indices, got {_shown(latents)}"
        )
    return Tracker(
        name=name,
        layer=_text(where, "layer", raw["layer"], _LAYER),
        sae=_existing(where, "sae", raw["sae"], "sae"),
        latents=tuple(_integer(where, f"latents[{i}]", v, 0) for i, v in enumerate(latents)),
    )


def _measure(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [m.strip() for m in raw.split(",") if m.strip()]
    if not isinstance(raw, list):
        raise ValueError(f"measure must be a list of layer names, got {_shown(raw)}")
    layers = [_text("", f"measure[{i}]", m, _LAYER) for i, m in enumerate(raw)]
    for i, layer in enumerate(layers):
        if layer in layers[:i]:
            raise ValueError(f"measure[{i}]: {layer!r} is already measure[{layers.index(layer)}]")
    return tuple(layers)


def _referenced_files(spec: InterventionSpec) -> dict[str, str]:
    """Every SAE folder and vector file the spec names (each was checked to exist)."""
    files: dict[str, str] = {}
    for step in spec.steps:
        if step.sae:
            files[step.sae] = "sae"
        if step.direction is not None:
            if step.direction.sae:
                files[step.direction.sae] = "sae"
            if step.direction.vector:
                files[step.direction.vector] = "vector"
    for tracker in spec.track:
        files[tracker.sae] = "sae"
    return files


# --- checked values: each error names where the value is and what would be accepted ---------
def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _check_keys(where: str, values: dict[str, Any], known) -> None:
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys: {', '.join(sorted(known))}")


def _check_unique(labels: list[str], names: list[str]) -> None:
    first: dict[str, str] = {}
    for label, name in zip(labels, names, strict=True):
        if name in first:
            raise ValueError(
                f"{label}: the name {name!r} is already {first[name].split(' (')[0]}'s; "
                "names must be unique"
            )
        first[name] = label


def _integer(where: str, key: str, value: Any, minimum: int) -> int:
    check_int(f"{_prefix(where)}{key}", value, minimum)
    return value


def _number(where: str, key: str, value: Any) -> float:
    """Any finite number, of either sign (a scale, a coefficient, a concept value)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{_prefix(where)}{key} must be a finite number, got {_shown(value)}")
    return float(value)


def _boolean(where: str, key: str, value: Any) -> bool:
    check_bool(f"{_prefix(where)}{key}", value)
    return value


def _text(where: str, key: str, value: Any, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{_prefix(where)}{key} must be {what}, got {_shown(value)}")
    return value


def _path(where: str, key: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return absolute(_text(where, key, value, "a path (a non-empty string)"))


def _existing(where: str, key: str, value: Any, kind: str) -> str:
    path = _path(where, key, value)
    if not store_path(path).exists():
        what = "an SAE folder" if kind == "sae" else "a .safetensors file"
        raise ValueError(f"{_prefix(where)}{key}: {path!r} does not exist (expected {what})")
    return path
