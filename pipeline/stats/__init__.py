"""Mergeable statistics over activation stores (stage 2): SAE feature statistics and evaluation."""

from pipeline.stats.eval import EvalSums
from pipeline.stats.features import FeatureStats
from pipeline.stats.sae_stats import sae_feature_stats, unit_feature_stats, write_feature_tables

__all__ = [
    "EvalSums",
    "FeatureStats",
    "sae_feature_stats",
    "unit_feature_stats",
    "write_feature_tables",
]
