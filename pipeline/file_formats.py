"""Reading the files users hand us (JSON configs, safetensors weights) with errors that
name the file.

The libraries' own errors name no file ("Error while deserializing header: header too
large", "Expecting value: line 1 column 1"), and a pipeline reads dozens of files. These
wrappers raise a ValueError that says which file is broken and what it should be. Nothing
here unpickles: a pickle renamed to `.safetensors` fails safetensors' header check and is
refused like any other corrupt file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load, load_file

from pipeline.store.location import is_url, store_path


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The parsed JSON at `path` (a local file or an s3:// object); ValueError naming the
    file when it is not valid JSON."""
    path = store_path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not a valid {what} ({e.msg}: line {e.lineno} column {e.colno}); "
            "the file may be truncated or not JSON"
        ) from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a valid {what} (not UTF-8 text)") from e


def read_safetensors(path: str | Path, device: str = "cpu", what: str = "weights file") -> dict:
    """The tensors in the safetensors file at `path`; ValueError naming the file if corrupt.

    A local file is memory-mapped; an object on s3:// is read whole (safetensors parses
    bytes, and SAE and trainer files are read whole anyway)."""
    path = store_path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    try:
        if is_url(path):
            return {name: t.to(device) for name, t in load(path.read_bytes()).items()}
        return load_file(str(path), device=device)
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(
            f"{path}: not a valid safetensors {what} ({e}); it may be truncated, or another "
            "format (pickled .pt/.bin files are never loaded)"
        ) from e
