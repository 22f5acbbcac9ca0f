"""The reading examples of docs/store-format.md run, in order, against a real store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.store_helpers import expected_float32, small_plan, write_store

PAGE = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_store_format_examples_run(tmp_path, dtype):
    plan = small_plan()
    write_store(tmp_path / "s", plan, dtype=dtype)
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {"STORE": str(tmp_path / "s"), "HOOK": "encoder.layer.0"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    assert len(namespace["tokens"]) == plan.num_rows
    assert namespace["docs"]["doc_id"].tolist() == [0, 1, 2, 3]
    assert namespace["first_doc_tokens"][0] == "[CLS]"
    np.testing.assert_array_equal(namespace["acts"], expected_float32(0, 100, 8, dtype))
    if dtype == "float16":  # pandas cannot rank float16: the page's cast is what makes it run
        assert namespace["values"].dtype == np.float16
    norms = namespace["top"]["norm"].tolist()
    assert len(norms) == 5 and norms == sorted(norms, reverse=True)
    assert namespace["matrix"].shape == (100, 8)
