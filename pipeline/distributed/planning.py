"""Tokenizing big corpora with Ray tasks, into the same plan the single process builds.

Documents are read once by the driver (they carry the doc ids), cut into contiguous
shards, tokenized in parallel tasks, and reassembled in order by the same deterministic
`assemble_plan` the single-process planner uses: so the plan, and the store, are the
same whichever way it was built.
"""

from __future__ import annotations

import ray

from pipeline.capture.config import CaptureConfig
from pipeline.capture.model_setup import model_path
from pipeline.store.corpus import Corpus, Document
from pipeline.store.plan import PlanConfig, TokenPlan, assemble_plan, tokenize_documents

MIN_DOCS_PER_TASK = 512


def _tokenize_shard(model_dir: str, documents: list[Document]):
    from transformers import AutoTokenizer

    return tokenize_documents(documents, AutoTokenizer.from_pretrained(model_dir))


def plan_in_parallel(
    config: CaptureConfig, min_docs_per_task: int = MIN_DOCS_PER_TASK
) -> TokenPlan | None:
    """The plan built with Ray tasks, or None when the corpus is too small to bother."""
    documents = list(Corpus(config.corpus))
    if len(documents) < 2 * min_docs_per_task:
        return None
    from transformers import AutoTokenizer

    model_dir = str(model_path(config))
    num_tasks = max(2, min(64, len(documents) // min_docs_per_task))
    bounds = [len(documents) * i // num_tasks for i in range(num_tasks + 1)]
    task = ray.remote(_tokenize_shard).options(num_cpus=1)
    refs = [
        task.remote(model_dir, documents[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    token_ids = [ids for shard in ray.get(refs) for ids in shard]
    plan_config = PlanConfig(
        context_length=config.context_length,
        mode=config.mode,
        rows_per_unit=config.rows_per_unit,
        max_tokens=config.max_tokens,
    )
    return assemble_plan(
        documents, token_ids, AutoTokenizer.from_pretrained(model_dir), plan_config
    )
