"""Stage 2: replay a store's windows with a cascade of controller and SAE interventions.

`load_spec` reads a YAML spec, `run_interventions` runs it in this process, and
`pipeline.distributed.interventions.run_interventions_on_ray` runs it on Ray actors.
"""

from pipeline.interventions.parse import load_spec, spec_from_dict
from pipeline.interventions.run import InterventionResult, run_interventions
from pipeline.interventions.spec import InterventionSpec

__all__ = [
    "InterventionResult",
    "InterventionSpec",
    "load_spec",
    "run_interventions",
    "spec_from_dict",
]
