"""The model layer: loading, layer resolution, hook registration, inference."""

from pipeline.model.defaults import default_model_path
from pipeline.model.language_model import LanguageModel, parse_dtype

__all__ = ["LanguageModel", "default_model_path", "parse_dtype"]
