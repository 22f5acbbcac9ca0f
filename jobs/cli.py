"""How every `jobs.*` command ends: one line for a user's mistake, a traceback for ours.

A user error is an OSError (a missing or unreadable file, a full disk: its message names the
file) or a ValueError raised by this project's own code: we raise those on purpose, with a
message that names the bad value or file and what would fix it (a bad config or spec, a
corrupt file). Such an error is printed as one line on stderr and the command exits 2;
`--debug` (or PIPELINE_DEBUG=1) shows the traceback instead. Anything else (a ValueError
raised inside a library, a TypeError, an assertion) is unexpected and keeps its
traceback, so a bug is never disguised as a one-liner.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

USER_ERROR_EXIT = 2
_OURS = tuple(str(Path(__file__).resolve().parents[1] / name) for name in ("pipeline", "jobs"))


def add_store_sae_args(parser: argparse.ArgumentParser) -> None:
    """--store, --hook, --sae: what every SAE job over a store reads."""
    parser.add_argument("--store", required=True, help="activation store folder or s3:// URL")
    parser.add_argument("--hook", required=True, help="hook (layer) name in the store")
    parser.add_argument(
        "--sae", required=True, help="SAE folder or s3:// prefix (ours or SAELens-style)"
    )


def add_stage_two_flags(parser: argparse.ArgumentParser) -> None:
    """--no-ray, --quiet, --overwrite, --partial, --debug: how a stage-2 job runs."""
    parser.add_argument("--no-ray", action="store_true", help="compute in this process")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run in --out"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="use only the committed units of an unfinished store (refused otherwise)",
    )
    add_debug_flag(parser)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run_job(body: Callable[[], int], debug: bool = False) -> int:
    """Run a job's body; a user error becomes one line on stderr and exit status 2."""
    try:
        return body()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        cause = user_error(error)
        if cause is None or debug or os.environ.get("PIPELINE_DEBUG"):
            raise
        print(f"error: {one_line(cause)} (--debug shows the traceback)", file=sys.stderr)
        return USER_ERROR_EXIT


def user_error(error: BaseException) -> BaseException | None:
    """The user-facing error behind `error`, or None when it is unexpected (a bug)."""
    cause = getattr(error, "cause", None)  # a Ray task's or actor's error wraps the original
    if cause is not None and type(error).__name__.startswith("Ray"):
        return cause if isinstance(cause, ValueError | OSError) else None
    if isinstance(error, OSError):
        return error
    if not isinstance(error, ValueError):
        return None
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return error
    return error if frames[-1].filename.startswith(_OURS) else None


def one_line(error: BaseException) -> str:
    """The message with its lines joined: a list of differing fields reads as `a; b; c`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines) if lines else type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


# Below this many units a fresh local Ray instance costs more than it saves (measured: a
# 3-unit store took 2 min 28 s for sae_stats on a freshly started local Ray, 14 s here).
SMALL_STORE_UNITS = 16


def run_here(no_ray: bool, num_units: int) -> bool:
    """Whether a stage-2 job computes in this process: asked (`--no-ray`), or no cluster
    is given (RAY_ADDRESS unset) and the store is small; the latter is said on stderr."""
    if no_ray:
        return True
    if os.environ.get("RAY_ADDRESS") or num_units > SMALL_STORE_UNITS:
        return False
    print(
        f"no cluster given (RAY_ADDRESS unset) and {num_units} units to read: computing in "
        "this process (set RAY_ADDRESS to use a cluster)",
        file=sys.stderr,
    )
    return True
