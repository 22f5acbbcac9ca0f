"""Activation capture for interpretability: hooks, stores, Ray capture, SAEs.

The public names below are the stable API; see README.md and docs/.
"""

from pipeline.hooks import (
    ActivationThresholdController,
    ConditionalPipeline,
    Controller,
    Detector,
    FunctionController,
    Hook,
    HookError,
    HookType,
    LayerActivationDetector,
    ModelInputDetector,
    ModelOutputDetector,
    PipelineController,
    TokenPositionController,
)
from pipeline.model import LanguageModel, default_model_path
from pipeline.sae import JumpReluSae, ReluSae, Sae, SparseCodes, TopKSae, load_sae

__version__ = "0.1.0"

__all__ = [
    "ActivationThresholdController",
    "ConditionalPipeline",
    "Controller",
    "Detector",
    "FunctionController",
    "Hook",
    "HookError",
    "HookType",
    "JumpReluSae",
    "LanguageModel",
    "LayerActivationDetector",
    "ModelInputDetector",
    "ModelOutputDetector",
    "PipelineController",
    "ReluSae",
    "Sae",
    "SparseCodes",
    "TokenPositionController",
    "TopKSae",
    "default_model_path",
    "load_sae",
]
