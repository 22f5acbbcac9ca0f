"""Sparse autoencoders: hooks that detect (codes) and control (concept edits), files, training.

See docs/sae.md. `pipeline.sae.from_store` (training from an activation store) is not
imported here, so importing SAEs does not import the store stack (zarr, pyarrow).
"""

from pipeline.sae.architectures import JumpReluSae, ReluSae, TopKSae
from pipeline.sae.base import Sae, load_sae
from pipeline.sae.buffer import mixing_buffer
from pipeline.sae.codes import SparseCodes
from pipeline.sae.concepts import Concepts
from pipeline.sae.config import SaeConfig
from pipeline.sae.hooking import layer_output_width
from pipeline.sae.select import topk_rows
from pipeline.sae.tracking import TextTracker, TopText
from pipeline.sae.trainer import SaeTrainer, TrainerConfig, train_sae

__all__ = [
    "Concepts",
    "JumpReluSae",
    "ReluSae",
    "Sae",
    "SaeConfig",
    "SaeTrainer",
    "SparseCodes",
    "TextTracker",
    "TopKSae",
    "TopText",
    "TrainerConfig",
    "layer_output_width",
    "load_sae",
    "mixing_buffer",
    "topk_rows",
    "train_sae",
]
