"""The reading examples of docs/store-format.md run, in order, against a real store."""

from __future__ import annotations

import re
from pathlib import Path

from tests.store_helpers import small_plan, write_store

PAGE = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


def test_store_format_examples_run(tmp_path):
    write_store(tmp_path / "s", small_plan())
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {"STORE": str(tmp_path / "s"), "HOOK": "encoder.layer.0"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    assert namespace["matrix"].shape == (100, 8)
    assert namespace["first_doc_tokens"][0] == "[CLS]"
