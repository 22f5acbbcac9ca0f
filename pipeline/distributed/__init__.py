"""The only layer that imports `ray`: capture actors, the driver, parallel planning."""

from pipeline.distributed.driver import run_capture

__all__ = ["run_capture"]
