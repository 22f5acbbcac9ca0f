"""What an intervention run does, parsed from YAML and `--set` overrides.

A run replays the token windows of a stage-1 store through the store's own model with a
*cascade* of interventions switched on, and measures what changed. Each step acts on one
layer and is exactly one of:

    sae: DIR, concepts: {42: {scale: 4.0}, 7: {set: 0.0}}, splice: false
                                an SAE attached as a controller with concepts edited
                                (splice: true replaces the layer's output by the SAE's
                                reconstruction, the usual "loss with the SAE spliced in")
    scale: 0.5                  multiply the layer's output
    add: {sae: DIR, latent: 42} (or {vector: FILE.safetensors, key: NAME})
         with coefficient: 4.0  add a direction (unit-normalised) times the coefficient
    project_out: <direction>    remove the output's component along a direction
    ablate: zero | mean         replace the output by zeros, or by the store's mean of
                                that layer (the layer must be one the store captured)

Any step may limit itself to `positions: [0, 1]` (positions within each window). Steps
run in the listed order inside one forward pass, so a later step sees what earlier ones
changed: that is the cascade. With `cumulative: true` (the default) effects are measured
after each prefix of the cascade (stage 1 = step 1 alone, stage 2 = steps 1-2, ...), so
each step's marginal effect can be read off; with `false` only the whole cascade is run.

Unknown keys are errors that list the known ones; files are checked to exist up front.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.capture.config_io import read_values

OPERATIONS = ("sae", "scale", "add", "project_out", "ablate")
_STEP_KEYS = {"name", "layer", "positions", "concepts", "splice", "coefficient", *OPERATIONS}
_DIRECTION_KEYS = {"sae", "latent", "vector", "key"}
_TRACK_KEYS = {"name", "layer", "sae", "latents"}


@dataclass(frozen=True)
class Direction:
    """A direction in a layer's activation space: an SAE decoder column or a stored vector."""

    sae: str | None = None
    latent: int | None = None
    vector: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    layer: str
    operation: str
    sae: str | None = None
    concepts: tuple[tuple[int, str, float], ...] = ()  # (latent, "scale" | "set", number)
    splice: bool = False
    factor: float | None = None
    direction: Direction | None = None
    coefficient: float = 1.0
    ablate: str | None = None
    positions: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Tracker:
    """SAE latents whose values are recorded with and without the interventions."""

    name: str
    layer: str
    sae: str
    latents: tuple[int, ...]


@dataclass(frozen=True)
class InterventionSpec:
    store: str
    out: str
    steps: tuple[Step, ...]
    measure: tuple[str, ...] = ()
    track: tuple[Tracker, ...] = ()
    cumulative: bool = True
    batch_size: int = 8
    max_units: int | None = None
    device: str = "cpu"
    torch_threads: int | None = None
    num_workers: int = 2
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    max_retries: int = 2
    overwrite: bool = False
    fault_injection: dict | None = None  # test-only: {"kill_unit": N} kills a worker once
    files: dict[str, str] = field(default_factory=dict)  # every referenced file -> kind

    @property
    def stage_names(self) -> list[str]:
        """Stage s (1-based) applies steps[:s]; with cumulative=False only the last stage."""
        names = [step.name for step in self.steps]
        prefixes = ["+".join(names[: s + 1]) for s in range(len(names))]
        return prefixes if self.cumulative else prefixes[-1:]

    @property
    def stage_sizes(self) -> list[int]:
        """How many leading steps each stage applies."""
        counts = list(range(1, len(self.steps) + 1))
        return counts if self.cumulative else counts[-1:]


_TOP_KEYS = [f.name for f in dataclasses.fields(InterventionSpec) if f.name != "files"]


def load_spec(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> InterventionSpec:
    """The YAML file (if any), then `--set key=value` overrides, into a checked spec."""
    return spec_from_dict(read_values(path, overrides))


def spec_from_dict(values: dict[str, Any]) -> InterventionSpec:
    values = dict(values)
    _check_keys("intervention spec", values, _TOP_KEYS)
    for required in ("store", "out", "steps"):
        if values.get(required) in (None, "", []):
            raise ValueError(f"the intervention spec needs {required!r}")
    if not isinstance(values["steps"], list):
        raise ValueError("steps must be a list of steps (one mapping each)")
    steps = tuple(_step(i, raw) for i, raw in enumerate(values.pop("steps")))
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names must be unique, got {names}")
    track = tuple(_tracker(i, raw) for i, raw in enumerate(values.pop("track", None) or []))
    values["store"], values["out"] = absolute(values["store"]), absolute(values["out"])
    measure = values.pop("measure", None) or ()
    if isinstance(measure, str):
        measure = [m.strip() for m in measure.split(",") if m.strip()]
    spec = InterventionSpec(
        steps=steps,
        track=track,
        measure=tuple(str(m) for m in measure),
        **{k: v for k, v in values.items()},
    )
    if spec.batch_size < 1 or spec.num_workers < 1 or spec.max_retries < 0:
        raise ValueError("batch_size and num_workers must be >= 1, max_retries >= 0")
    if spec.max_units is not None and spec.max_units < 1:
        raise ValueError(f"max_units must be >= 1 or null, got {spec.max_units}")
    return dataclasses.replace(spec, files=_referenced_files(spec))


def absolute(path: Any) -> str:
    """Paths are fixed before a job starts: Ray workers run in other directories."""
    return str(Path(str(path)).expanduser().resolve())


def _mapping(where: str, raw: Any, known) -> dict[str, Any]:
    """`raw` itself, checked to be a mapping with only `known` keys."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping, got {raw!r}")
    _check_keys(where, raw, known)
    return raw


def _check_keys(where: str, values: dict[str, Any], known) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} in {where}; known keys: {', '.join(sorted(known))}"
        )


def _step(index: int, raw: Any) -> Step:
    where = f"step {index}"
    raw = _mapping(where, raw, _STEP_KEYS)
    operations = [op for op in OPERATIONS if op in raw]
    if len(operations) != 1:
        raise ValueError(
            f"{where} must have exactly one of {', '.join(OPERATIONS)}; it has {operations or 'none'}"
        )
    operation = operations[0]
    if "layer" not in raw:
        raise ValueError(f"{where} needs a layer (a hook name such as layer_3)")
    name = str(raw.get("name") or f"{operation}@{raw['layer']}")
    where = f"step {index} ({name})"
    fields: dict[str, Any] = {"name": name, "layer": str(raw["layer"]), "operation": operation}
    if raw.get("positions") is not None:
        positions = raw["positions"]
        if not isinstance(positions, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions
        ):
            raise ValueError(
                f"{where}: positions must be a list of positions >= 0 within each window "
                f"(windows are right-padded, so counting from the end is ambiguous), got {positions!r}"
            )
        fields["positions"] = tuple(positions)
    misplaced = [
        key
        for key, allowed in (("concepts", "sae"), ("splice", "sae"), ("coefficient", "add"))
        if key in raw and operation != allowed
    ]
    if misplaced:
        raise ValueError(f"{where}: {misplaced} do not apply to a {operation} step")
    if operation == "sae":
        fields["sae"] = absolute(raw["sae"])
        fields["concepts"] = _concepts(where, raw.get("concepts") or {})
        fields["splice"] = bool(raw.get("splice", False))
        if not fields["concepts"] and not fields["splice"]:
            raise ValueError(
                f"{where}: an SAE step without concepts or splice changes nothing; "
                "add concepts: {LATENT: {scale: S}} or splice: true"
            )
    elif operation == "scale":
        fields["factor"] = float(raw["scale"])
    elif operation in ("add", "project_out"):
        fields["direction"] = _direction(where, raw[operation])
        fields["coefficient"] = float(raw.get("coefficient", 1.0))
    else:
        if raw["ablate"] not in ("zero", "mean"):
            raise ValueError(f"{where}: ablate must be 'zero' or 'mean', got {raw['ablate']!r}")
        fields["ablate"] = raw["ablate"]
    return Step(**fields)


def _concepts(where: str, raw: Any) -> tuple[tuple[int, str, float], ...]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: concepts must map latent -> {{scale: S}} or {{set: V}}")
    edits = []
    for latent, edit in raw.items():
        if not isinstance(edit, dict) or len(edit) != 1 or next(iter(edit)) not in ("scale", "set"):
            raise ValueError(
                f"{where}: concept {latent} must be {{scale: S}} or {{set: V}}, got {edit!r}"
            )
        ((kind, number),) = edit.items()
        edits.append((int(latent), kind, float(number)))
    return tuple(sorted(edits))


def _direction(where: str, raw: Any) -> Direction:
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: a direction is {{sae: DIR, latent: N}} or {{vector: FILE, key: NAME}}"
        )
    _check_keys(f"{where} direction", raw, _DIRECTION_KEYS)
    if "sae" in raw and "latent" in raw and "vector" not in raw:
        return Direction(sae=absolute(raw["sae"]), latent=int(raw["latent"]))
    if "vector" in raw and "sae" not in raw:
        return Direction(vector=absolute(raw["vector"]), key=raw.get("key"))
    raise ValueError(
        f"{where}: a direction is {{sae: DIR, latent: N}} or {{vector: FILE, key: NAME}}, got {raw!r}"
    )


def _tracker(index: int, raw: Any) -> Tracker:
    where = f"track entry {index}"
    raw = _mapping(where, raw, _TRACK_KEYS)
    missing = [k for k in ("layer", "sae", "latents") if k not in raw]
    if missing:
        raise ValueError(f"{where} needs {missing}")
    return Tracker(
        name=str(raw.get("name") or f"t{index}"),
        layer=str(raw["layer"]),
        sae=absolute(raw["sae"]),
        latents=tuple(int(latent) for latent in raw["latents"]),
    )


def _referenced_files(spec: InterventionSpec) -> dict[str, str]:
    """Every SAE folder and vector file the spec names, each checked to exist."""
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
    for path, kind in files.items():
        if not Path(path).exists():
            what = "an SAE folder" if kind == "sae" else "a .safetensors file"
            raise ValueError(f"{path!r} does not exist (expected {what})")
    return files
