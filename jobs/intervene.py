"""`python -m jobs.intervene --spec SPEC.yaml`: cascading interventions on a store's windows.

Replays the windows of a captured store through the store's own model with the spec's
steps (SAE concept edits or splices, scaling, adding or projecting out a direction,
zero or mean ablation) switched on in order, and writes per-token effects:
  OUT/effects/unit-N.parquet  one row per token and stage: row, doc_id, window, position,
                              token_id, stage, then KL(base || intervened), top-1
                              agreement, next-token loss with and without (causal LMs) or
                              output cosine and change (encoders), the relative change at
                              each measured layer, and tracked SAE latents before/after
  OUT/summary.parquet, OUT/summary.json   per-stage means
On Ray by default (joins RAY_ADDRESS or starts a local instance); `--no-ray` runs here.
A rerun of the same command resumes; a different spec on the same OUT is refused.
See docs/interventions.md for the spec format.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from jobs.cli import add_debug_flag, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.intervene",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", help="intervention spec (YAML)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key (YAML value), e.g. --set max_units=2",
    )
    parser.add_argument("--out", help="output folder (overrides the spec's out)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--no-ray", action="store_true", help="run in this process")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="on a rerun, checksum each committed unit's effects file before trusting it",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-unit progress lines")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_job(lambda: intervene_job(args), debug=args.debug)


def intervene_job(args: argparse.Namespace) -> int:
    from pipeline.interventions import load_spec

    overrides = list(args.set)
    if args.out:
        overrides.append(f"out={args.out}")
    spec = load_spec(args.spec, overrides)
    if args.overwrite:
        spec = replace(spec, overwrite=True)
    if args.no_ray:
        from pipeline.interventions import run_interventions

        result = run_interventions(spec, progress=not args.quiet, verify=args.verify)
    else:
        from pipeline.distributed.interventions import run_interventions_on_ray

        result = run_interventions_on_ray(spec, progress=not args.quiet, verify=args.verify)
    out = result.out  # a folder, or an s3:// prefix
    print(result.summary.to_string(index=False))
    damaged = (
        f" ({result.units_damaged} failed their check and were redone)"
        if result.units_damaged
        else ""
    )
    print(
        f"\n{result.units_computed} units computed{damaged}; effects in {out}/effects, "
        f"summary in {out}/summary.parquet"
    )
    print(f"  pandas.read_parquet('{out}/effects')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
