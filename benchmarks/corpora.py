"""Benchmark corpora: the pydoc topics (shipped with every Python) written as JSONL.

Repeating one text makes a larger corpus of the same kind, so only its size changes.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENS_PER_COPY = 124_000  # MiniLM tokens of one copy of the pydoc topics (measured)


def repeated_pydoc_jsonl(path: Path, copies: int) -> Path:
    """`copies` copies of the pydoc topics, each document prefixed with its copy number."""
    from pydoc_data.topics import topics

    with open(path, "w") as handle:
        for copy in range(copies):
            for key in sorted(topics):
                handle.write(json.dumps({"text": f"[{copy}] {topics[key]}"}) + "\n")
    return path


def pydoc_jsonl(path: Path, num_tokens: int) -> Path:
    """The pydoc topics repeated until the corpus holds about `num_tokens` tokens."""
    from pydoc_data.topics import topics

    lines = [json.dumps({"text": topics[name]}) + "\n" for name in sorted(topics)]
    with open(path, "w") as f:
        for _ in range(max(1, round(num_tokens / TOKENS_PER_COPY))):
            f.writelines(lines)
    return path
