"""The capture configuration: one frozen dataclass, validated on construction.

Configs are inert values (no I/O, no seeding), so the same object can be sent to Ray
actors. `pipeline.capture.config_io` is the one place YAML and `--set` overrides become
these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.store.corpus import CorpusConfig

STORE_DTYPES = ("float32", "float16", "bfloat16")
MODEL_DTYPES = (None, "float32", "float16", "bfloat16")
DEFAULT_HOOKS = ("layer_1", "layer_3", "layer_5")


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """Everything a capture run needs.

    model: a Hugging Face model folder; None is the embedded MiniLM.
    hooks: layer signatures to capture (dotted paths or `layer_N`), all in one pass.
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
    num_workers: Ray actors (model replicas); ignored by single-process capture.
    num_gpus_per_worker / num_cpus_per_worker: Ray resources per actor (fractions allowed).
    units_in_flight_per_worker: units queued on each actor at once (>= 1).
    torch_threads: intra-op threads per worker (None: torch's default).
    max_retries: attempts per unit beyond the first before the job fails.
    fault_injection: test-only; {"kill_unit": N, "kill_after_batches": B} makes the worker
        process that first runs unit N die (os._exit; with "signal": "SIGKILL" it sends
        itself SIGKILL) after B batches of that unit; {"raise_unit": N} makes every attempt
        at unit N raise. Off by default.
    """

    model: str | None = None
    hooks: tuple[str, ...] = DEFAULT_HOOKS
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
    num_workers: int = 2
    num_gpus_per_worker: float = 0.0
    num_cpus_per_worker: float = 1.0
    units_in_flight_per_worker: int = 2
    torch_threads: int | None = None
    max_retries: int = 3
    fault_injection: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if not self.hooks:
            raise ValueError("hooks must name at least one layer, e.g. hooks=['layer_3']")
        if len(set(self.hooks)) != len(self.hooks):
            raise ValueError(f"hooks must be distinct, got {list(self.hooks)}")
        if self.dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {list(STORE_DTYPES)}, got {self.dtype!r}")
        if self.model_dtype not in MODEL_DTYPES:
            raise ValueError(
                f"model_dtype must be one of {list(MODEL_DTYPES)}, got {self.model_dtype!r}"
            )
        if self.mode not in ("packing", "document"):
            raise ValueError(f"mode must be 'packing' or 'document', got {self.mode!r}")
        positive = {
            "context_length": self.context_length,
            "rows_per_unit": self.rows_per_unit,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "units_in_flight_per_worker": self.units_in_flight_per_worker,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(
                f"max_tokens must be a positive integer or None, got {self.max_tokens!r}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(
                f"torch_threads must be a positive integer or None, got {self.torch_threads!r}"
            )
        if self.num_gpus_per_worker < 0 or self.num_cpus_per_worker < 0:
            raise ValueError("num_gpus_per_worker and num_cpus_per_worker must be >= 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not isinstance(self.corpus, CorpusConfig):
            raise TypeError(f"corpus must be a CorpusConfig, got {type(self.corpus).__name__}")
        if not self.out:
            raise ValueError("out must be a directory path")
