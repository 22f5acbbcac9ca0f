"""Config files as nested mappings: a YAML file, then `--set key=value` overrides.

Shared by the capture's config (`pipeline/capture/config_io.py`) and the intervention
spec (`pipeline/interventions/parse.py`): both read a YAML mapping and apply the same
dotted overrides (`--set corpus.path=x.jsonl`, `--set ray.num_workers=4`) before turning
the mapping into their own dataclasses, which check the values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["hooks=[layer_1]", "corpus.path=x.jsonl"]` -> a nested dict (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set takes key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ValueError(f"--set {key}: {raw!r} is not a YAML value ({e})") from e
        target = result
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result


def merge_nested(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_values(path: str | Path | None, overrides: list[str] | None) -> dict[str, Any]:
    """The YAML mapping in `path` (if any) with `--set key=value` overrides merged in."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping")
        values = loaded or {}
    return merge_nested(values, parse_overrides(overrides or []))
