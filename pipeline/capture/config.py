"""The capture configuration: one frozen dataclass, validated on construction.

Configs are inert values (no I/O, no seeding), so the same object can be sent to Ray
actors. `pipeline.capture.config_io` is the one place YAML and `--set` overrides become
these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.checks import check_bool, check_choice, check_int, check_str
from pipeline.store.corpus import CorpusConfig

STORE_DTYPES = ("float32", "float16", "bfloat16")
MODEL_DTYPES = (None, "float32", "float16", "bfloat16")
DEFAULT_HOOKS = ("layer_1", "layer_3", "layer_5")


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """Everything a capture run needs.

    model: a Hugging Face model folder; None is the embedded MiniLM.
    hooks: layer signatures to capture (dotted paths, `layer_N`, or an int index into
        `lm.layers.names()`, stored under the module's dotted path), all in one pass.
    dtype: how activations are stored: float32, float16 or bfloat16.
    model_dtype: what the model runs in (None: the checkpoint's default, float32).
    device: "cpu", "cuda", "cuda:1", ... (Ray workers on GPUs use "cuda").
    corpus: where documents come from (default: the embedded pydoc corpus).
    context_length: tokens per window, special tokens included.
    mode: "packing" (documents joined, cut into full windows) or "document".
    rows_per_unit: rows per unit of work; one unit = one Zarr shard = one commit.
    max_tokens: capture only this deterministic prefix of the plan (None: every token).
    batch_size: windows per forward pass.
    out: the store directory (made absolute by the job before it starts).
    overwrite: replace an existing store with a different configuration.
    verify: on a rerun, hash every committed unit's data and part's files before trusting
        them (reads the whole store); by default only records and file sizes are checked.
    torch_threads: intra-op threads per worker (None: torch's default), single-process
        capture and each Ray actor alike.

    How the work is spread over Ray actors (workers, resources, retries) is not here: it
    says nothing about what is captured, so it is a separate `pipeline.ray_config.RayConfig`
    (the `ray:` section of a config file), shared with interventions.
    """

    model: str | None = None
    hooks: tuple[str | int, ...] = DEFAULT_HOOKS
    dtype: str = "float16"
    model_dtype: str | None = None
    device: str = "cpu"
    corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(kind="pydoc"))
    context_length: int = 128
    mode: str = "packing"
    rows_per_unit: int = 4096
    max_tokens: int | None = None
    batch_size: int = 8
    out: str = "stores/capture"
    overwrite: bool = False
    verify: bool = False
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.hooks, str | int):
            raise ValueError(
                f"hooks must be a list of layers, e.g. ['layer_3'], got {self.hooks!r}"
            )
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if not self.hooks:
            raise ValueError("hooks must name at least one layer, e.g. hooks=['layer_3']")
        for hook in self.hooks:
            if isinstance(hook, bool) or not isinstance(hook, str | int) or hook == "":
                raise ValueError(
                    "hooks: each is a layer name ('layer_3', 'transformer.h.3') or an index "
                    f"into lm.layers.names(), got {_kind(hook)}"
                )
        if len(set(self.hooks)) != len(self.hooks):
            raise ValueError(f"hooks must be distinct, got {list(self.hooks)}")
        check_str("model", self.model, optional=True)
        check_choice("dtype", self.dtype, STORE_DTYPES)
        check_choice("model_dtype", self.model_dtype, MODEL_DTYPES)
        check_str("device", self.device)
        check_choice("mode", self.mode, ("packing", "document"))
        for name in ("context_length", "rows_per_unit", "batch_size"):
            check_int(name, getattr(self, name))
        check_int("max_tokens", self.max_tokens, optional=True)
        check_int("torch_threads", self.torch_threads, optional=True)
        check_bool("overwrite", self.overwrite)
        check_bool("verify", self.verify)
        if not isinstance(self.corpus, CorpusConfig):
            raise TypeError(f"corpus must be a CorpusConfig, got {type(self.corpus).__name__}")
        check_str("out", self.out)


def _kind(value) -> str:
    return f"{value!r} ({type(value).__name__})"
