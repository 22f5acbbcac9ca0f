"""Capture: a corpus and a model into an activation store (single process; Ray in distributed/)."""

from pipeline.capture.config import CaptureConfig
from pipeline.capture.config_io import load_config
from pipeline.capture.run import CaptureResult, capture

__all__ = ["CaptureConfig", "CaptureResult", "capture", "load_config"]
