"""The store layer stays below the model: no ray, torch, pipeline.model or pipeline.hooks."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import pipeline.store
from tests.store_helpers import small_plan

FORBIDDEN = ("ray", "torch", "pipeline.model", "pipeline.hooks", "pipeline.distributed")
STORE_DIR = Path(pipeline.store.__file__).parent


@pytest.mark.parametrize("path", sorted(STORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_store_modules_do_not_import_higher_layers(path):
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    bad = [name for name in imported for f in FORBIDDEN if name == f or name.startswith(f + ".")]
    assert bad == []


def test_a_plan_pickles_for_shipping_to_workers():
    plan = small_plan()
    clone = pickle.loads(pickle.dumps(plan))
    assert clone.fingerprint() == plan.fingerprint()
    assert clone.token_table(0, 10).equals(plan.token_table(0, 10))
