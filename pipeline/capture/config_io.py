"""The capture's configuration from text: a YAML file and `--set key=value` overrides (read
by `pipeline/config_files.py`), parsed into a `CaptureConfig` and a `RayConfig`.

The one place text becomes configuration. Keys are the dataclass fields; `corpus.*` keys
go to the corpus and `ray.*` keys to the `RayConfig` (how the work is spread over Ray
actors). Unknown keys are errors that list the known ones; a Ray setting at the top level
(where it was before the `ray:` section) is an error that names its new key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.capture.config import CaptureConfig
from pipeline.config_files import read_values
from pipeline.ray_config import RayConfig, ray_config_from_dict, refuse_top_level_ray_keys
from pipeline.store.corpus import CORPUS_KINDS, CorpusConfig


def _known(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def config_from_dict(values: dict[str, Any]) -> CaptureConfig:
    """A mapping of CaptureConfig fields (no `ray` section: `load_config` splits it off)."""
    values = dict(values)
    if "ray" in values:
        raise ValueError(
            "ray is not a capture setting: config_from_dict builds the CaptureConfig alone; "
            "load_config parses the ray: section into a RayConfig "
            "(or call pipeline.ray_config.ray_config_from_dict)"
        )
    refuse_top_level_ray_keys(values)
    unknown = sorted(set(values) - set(_known(CaptureConfig)))
    if unknown:
        raise ValueError(
            f"unknown config keys {unknown}; known keys: {', '.join(_known(CaptureConfig))}"
        )
    corpus = values.pop("corpus", None)
    if corpus is not None:
        if not isinstance(corpus, dict):
            raise ValueError(f"corpus must be a mapping, got {corpus!r}")
        unknown = sorted(set(corpus) - set(_known(CorpusConfig)))
        if unknown:
            raise ValueError(
                f"unknown corpus keys {unknown}; known keys: {', '.join(_known(CorpusConfig))}"
            )
        if "kind" not in corpus:  # overrides of the default corpus, e.g. max_documents
            if corpus.get("path") is not None:
                raise ValueError(
                    f"corpus.kind is required with corpus.path: one of {list(CORPUS_KINDS)}"
                )
            corpus = {**corpus, "kind": "pydoc"}
        values["corpus"] = CorpusConfig(**corpus)
    if isinstance(values.get("hooks"), str):
        values["hooks"] = [h.strip() for h in values["hooks"].split(",") if h.strip()]
    return CaptureConfig(**values)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[CaptureConfig, RayConfig]:
    """Defaults, then the YAML file (if any), then `--set` overrides, in that order.

    The `ray:` section (`--set ray.num_workers=4`) becomes the RayConfig; the rest the
    CaptureConfig. Both are checked whether or not the job then runs on Ray."""
    values = read_values(path, overrides)
    refuse_top_level_ray_keys(values)
    ray_config = ray_config_from_dict(values.pop("ray", None))
    return config_from_dict(values), ray_config


def config_to_dict(config: CaptureConfig) -> dict[str, Any]:
    """The CaptureConfig as plain values (`config_from_dict` rebuilds it); no Ray settings."""
    values = dataclasses.asdict(config)
    values["hooks"] = list(config.hooks)
    return values
