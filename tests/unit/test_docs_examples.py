"""The code blocks of each guide in docs/ run, in order, in one namespace per page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize(
    ("page", "min_blocks"), [("hooks.md", 8), ("sae.md", 8), ("interventions.md", 3)]
)
def test_doc_examples_run(page, min_blocks):
    blocks = python_blocks(DOCS / page)
    assert len(blocks) >= min_blocks, f"{page} lost its python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), namespace)
