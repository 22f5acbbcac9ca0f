"""The layers of docs/architecture.md, checked on every module's imports.

Each package imports only the packages above it in LAYERS (and itself); the shared
modules beside the layers import only the store; only `pipeline.distributed` imports
ray, and the store imports neither torch nor ray. The table in docs/architecture.md
lists the layers in this order (checked too), so the document and the code cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipeline"
LAYERS = (
    "store", "accumulators", "hooks", "model", "sae", "capture", "interventions", "stats", "distributed",
    "report",
)  # fmt: skip
SHARED = ("checks", "config_files", "file_formats", "faults", "progress", "replay", "ray_config")
NO_TORCH = ("store",)


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def modules() -> list[tuple[str, Path]]:
    """(layer or 'shared', path) of every module of the package but its __init__."""
    found = [("shared", PIPELINE / f"{name}.py") for name in SHARED]
    for layer in LAYERS:
        found += [(layer, path) for path in sorted((PIPELINE / layer).rglob("*.py"))]
    return found


def test_every_module_belongs_to_a_layer_or_is_shared():
    packages = {p.name for p in PIPELINE.iterdir() if (p / "__init__.py").is_file()}
    top_level = {p.stem for p in PIPELINE.glob("*.py")} - {"__init__"}
    assert packages == set(LAYERS) and top_level == set(SHARED)


@pytest.mark.parametrize(
    "layer, path", modules(), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_imports_go_only_up_the_layers(layer, path):
    allowed = {"store"} if layer == "shared" else set(LAYERS[: LAYERS.index(layer) + 1])
    bad = []
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "ray" and layer != "distributed":
            bad.append(name)
        if parts[0] == "torch" and layer in NO_TORCH:
            bad.append(name)
        if parts[0] == "pipeline" and len(parts) > 1 and parts[1] not in (*SHARED, *allowed):
            bad.append(name)
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad} ({layer} may use {sorted(allowed)})"


def test_the_ray_config_is_plain_values_without_ray_or_torch():
    """RayConfig is sent to actors and built by Ray-free code (--no-ray, the spec parser)."""
    names = imported_modules(PIPELINE / "ray_config.py")
    assert not [n for n in names if n.split(".")[0] in ("ray", "torch")], names
    assert {n for n in names if n.startswith("pipeline")} <= {"pipeline.checks", "pipeline.store"}


def test_the_architecture_document_lists_the_layers_in_this_order():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\| \w+ \| `pipeline/(\w+)/` \|", text, flags=re.MULTILINE)
    assert tuple(listed) == LAYERS
    for name in SHARED:
        assert f"`pipeline/{name}.py`" in text
