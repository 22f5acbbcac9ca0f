"""Activation capture for interpretability: hooks, stores, Ray capture, SAEs.

The public names below are the stable API; see README.md and docs/. The main entry
points: `capture(CaptureConfig(...))` writes a store (`pipeline.distributed.run_capture`
on Ray, spread over actors as a `RayConfig` says), `ActivationStore.open(path)` reads one, `load_spec` + `run_interventions` replay
it with interventions, `load_sae` loads an SAE folder.
"""

from pipeline.capture import CaptureConfig, capture
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
from pipeline.interventions import load_spec, run_interventions
from pipeline.model import LanguageModel, default_model_path
from pipeline.ray_config import RayConfig
from pipeline.sae import JumpReluSae, ReluSae, Sae, SparseCodes, TopKSae, load_sae
from pipeline.store import ActivationStore

__version__ = "0.1.0"

__all__ = [
    "ActivationStore",
    "ActivationThresholdController",
    "CaptureConfig",
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
    "RayConfig",
    "ReluSae",
    "Sae",
    "SparseCodes",
    "TokenPositionController",
    "TopKSae",
    "capture",
    "default_model_path",
    "load_sae",
    "load_spec",
    "run_interventions",
]
