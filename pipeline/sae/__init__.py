"""Sparse autoencoders: hooks that detect (codes) and control (concept edits), files, training.

See docs/sae.md.
"""

from pipeline.sae.architectures import JumpReluSae, ReluSae, TopKSae
from pipeline.sae.base import Sae, SparseCodes, layer_output_width, load_sae
from pipeline.sae.concepts import Concepts
from pipeline.sae.config import SaeConfig
from pipeline.sae.tracking import TextTracker, TopText

__all__ = [
    "Concepts",
    "JumpReluSae",
    "ReluSae",
    "Sae",
    "SaeConfig",
    "SparseCodes",
    "TextTracker",
    "TopKSae",
    "TopText",
    "layer_output_width",
    "load_sae",
]
