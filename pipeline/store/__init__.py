"""Storage layer: corpus readers, the token plan, and Zarr + Parquet activation stores.

Lower than `pipeline.model` and `pipeline.hooks` and free of `ray` and `torch`: it receives
numpy arrays. The on-disk format is specified in docs/store-format.md.
"""

from pipeline.store.corpus import Corpus, CorpusConfig, Document
from pipeline.store.dtypes import bfloat16_bits_to_float32, float32_to_bfloat16_bits
from pipeline.store.meta import NotAStoreError, StoreMismatchError
from pipeline.store.plan import (
    PlanConfig,
    PlanStats,
    TokenPlan,
    build_plan,
    tokenize_documents,
)
from pipeline.store.planner import PlanResult, plan_corpus
from pipeline.store.reader import ActivationStore, UnfinishedStoreError
from pipeline.store.verify import StoreVerificationError
from pipeline.store.writer import StoreWriter, UnitWriteError

__all__ = [
    "ActivationStore",
    "Corpus",
    "CorpusConfig",
    "Document",
    "NotAStoreError",
    "PlanConfig",
    "PlanResult",
    "PlanStats",
    "StoreMismatchError",
    "StoreVerificationError",
    "StoreWriter",
    "TokenPlan",
    "UnfinishedStoreError",
    "UnitWriteError",
    "bfloat16_bits_to_float32",
    "build_plan",
    "float32_to_bfloat16_bits",
    "plan_corpus",
    "tokenize_documents",
]
