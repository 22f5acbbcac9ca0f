"""Hooks: detectors observe activations, controllers replace them (see docs/hooks.md)."""

from pipeline.hooks.controller import Controller, FunctionController
from pipeline.hooks.detector import (
    Detector,
    LayerActivationDetector,
    ModelInputDetector,
    ModelOutputDetector,
)
from pipeline.hooks.hook import BatchContext, Hook, HookError, HookType
from pipeline.hooks.patterns import (
    ActivationThresholdController,
    ConditionalPipeline,
    PipelineController,
    TokenPositionController,
)

__all__ = [
    "ActivationThresholdController",
    "BatchContext",
    "ConditionalPipeline",
    "Controller",
    "Detector",
    "FunctionController",
    "Hook",
    "HookError",
    "HookType",
    "LayerActivationDetector",
    "ModelInputDetector",
    "ModelOutputDetector",
    "PipelineController",
    "TokenPositionController",
]
