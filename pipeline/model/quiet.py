"""Silence the progress bars transformers and huggingface_hub draw while loading a model.

Every job loads its model through `LanguageModel.from_pretrained`, which calls
`quiet_model_loading()` first, so no job (and no Ray actor) prints transformers'
"Loading weights" bar: in a log it is pages of carriage-return fragments that say
nothing a job's own progress does not. The environment variable is set as well as the
in-process switch so that processes started afterwards (Ray workers inherit the
driver's environment) are quiet before they import transformers.
"""

from __future__ import annotations

import os


def quiet_model_loading() -> None:
    """Turn off transformers' and huggingface_hub's progress bars, here and in children."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
