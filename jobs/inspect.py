"""Print a summary of an activation store: `python -m jobs.inspect STORE [--quick]`.

Also summarises an intervention output (`jobs.intervene`'s OUT folder).
Exit status: 0 if the store verifies (or the interventions finished), 1 if it is
incomplete or damaged, 2 if it is not a store.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import add_debug_flag, run_job
from pipeline.store.summary import describe_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.inspect", description=__doc__)
    parser.add_argument("store", help="path of the store directory")
    parser.add_argument("--rows", type=int, default=5, help="token rows to show (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="verify without reading data for checksums"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_job(lambda: inspect_job(args), debug=args.debug)


def inspect_job(args: argparse.Namespace) -> int:
    from pipeline.interventions.summary import describe_interventions, is_intervention_output

    if is_intervention_output(args.store):
        text, finished = describe_interventions(args.store)
        print(text)
        return 0 if finished else 1
    text, verified = describe_store(args.store, args.rows, check_data=not args.quick)
    print(text)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
