"""What an intervention run does: the spec's types, and the checks that need the store or SAEs.

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

YAML becomes a spec in `parse.py`, which checks every value with its type and names it
(`steps[1] (name 'zero'): positions[0] ...`). What needs the store or an SAE (window
length, SAE widths) is checked by `check_positions` and `check_latents` here, which
`prepare_run` calls before the model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.checks import check_bool, check_int, check_str
from pipeline.ray_config import RayConfig

OPERATIONS = ("sae", "scale", "add", "project_out", "ablate")


@dataclass(frozen=True)
class Direction:
    """A direction in a layer's activation space: an SAE decoder column or a stored vector."""

    sae: str | None = None
    latent: int | None = None
    vector: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Step:
    """One step of the cascade: `operation` is one of OPERATIONS; the fields it uses are set."""

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


@dataclass(frozen=True, kw_only=True)
class InterventionSpec:
    """One intervention run. Build it with `spec_from_dict` or `load_spec`.

    store: a finished stage-1 store (absolute path).
    out: the output folder (absolute path); it holds only this job's files.
    steps: the cascade, in order (at least one).
    measure: layers whose relative change is recorded (default: the steps' layers).
    track: SAE latents recorded before and after the interventions.
    cumulative: True: one stage per prefix of the cascade; False: the whole cascade only.
    batch_size: windows per forward pass (>= 1).
    max_units: replay only the first N store units (>= 1), or None for all.
    device: torch device of the model replicas ("cpu", "cuda", "cuda:1", ...).
    torch_threads: intra-op threads per worker (>= 1), or None for torch's default.
    ray: how units are spread over Ray actors (workers, resources per actor, retries;
        the `ray:` section of the spec), the same `RayConfig` as capture's. Interventions
        queue one unit per actor, so `ray.units_in_flight_per_worker` is not used.
    overwrite: remove this job's earlier output in `out` first (never other files).
    verify: before trusting committed units, compare each effects file's sha256 with
        its record (a rerun always checks records parse and files have their sizes).
    files: every SAE folder and vector file the steps name -> "sae" | "vector".
    """

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
    ray: RayConfig = field(default_factory=RayConfig)
    overwrite: bool = False
    verify: bool = False
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("store", "out", "device"):
            check_str(key, getattr(self, key))
        for key in ("cumulative", "overwrite", "verify"):
            check_bool(key, getattr(self, key))
        check_int("batch_size", self.batch_size, 1)
        for key in ("max_units", "torch_threads"):
            check_int(key, getattr(self, key), 1, optional=True)
        if not isinstance(self.ray, RayConfig):
            raise TypeError(f"ray must be a RayConfig, got {type(self.ray).__name__}")
        if not self.steps:
            raise ValueError("steps: the intervention spec needs at least one step")

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


def step_label(index: int, name: str | None) -> str:
    """How errors name a step: `steps[1] (name 'zero')`."""
    return f"steps[{index}]" if name is None else f"steps[{index}] (name {name!r})"


def tracker_label(index: int, name: str | None) -> str:
    return f"track[{index}]" if name is None else f"track[{index}] (name {name!r})"


def check_positions(spec: InterventionSpec, context_length: int) -> None:
    """Every step's positions lie within the store's windows (`context_length` tokens)."""
    for index, step in enumerate(spec.steps):
        for i, position in enumerate(step.positions or ()):
            if position >= context_length:
                raise ValueError(
                    f"{step_label(index, step.name)}: positions[{i}] = {position} is outside "
                    f"the store's {context_length}-token windows (0..{context_length - 1})"
                )


def check_latents(spec: InterventionSpec, n_latents: Callable[[str], int]) -> None:
    """Every SAE latent index the spec names is below its SAE's width.

    `n_latents(path)` is the SAE folder's number of latents (it may raise ValueError or
    OSError for a folder that is not an SAE; the error is given the step's name).
    """
    for index, step in enumerate(spec.steps):
        where = step_label(index, step.name)
        if step.sae is not None:
            width = _width(where, "sae", step.sae, n_latents)
            for latent, _, _ in step.concepts:
                _latent_in_range(where, f"concepts[{latent}]", latent, width, step.sae)
        direction = step.direction
        if direction is not None and direction.sae is not None:
            key = f"{step.operation}.sae"
            width = _width(where, key, direction.sae, n_latents)
            _latent_in_range(
                where, f"{step.operation}.latent", direction.latent, width, direction.sae
            )
    for index, tracker in enumerate(spec.track):
        where = tracker_label(index, tracker.name)
        width = _width(where, "sae", tracker.sae, n_latents)
        for i, latent in enumerate(tracker.latents):
            _latent_in_range(where, f"latents[{i}]", latent, width, tracker.sae)


def _width(where: str, key: str, path: str, n_latents: Callable[[str], int]) -> int:
    try:
        return n_latents(path)
    except (ValueError, OSError) as error:
        raise ValueError(f"{where}: {key}: {error}") from error


def _latent_in_range(where: str, key: str, latent: int, width: int, sae: str) -> None:
    if not 0 <= latent < width:
        raise ValueError(
            f"{where}: {key}: latent {latent} is outside the SAE's {width} latents "
            f"(0..{width - 1}; {sae})"
        )
