"""`python -m jobs.report IN`: a static HTML report you open in a browser, no server needed.

IN is what an earlier job wrote, and decides the report:
- a `jobs.sae_stats` output: the feature dashboard (summary with firing-frequency and
  L0 histograms, dead/dense counts; one page per latent with shaded top contexts,
  samples across its activations, its activation histogram and the output tokens it
  promotes and suppresses); `--eval DIR` adds a `jobs.eval_sae` output's metrics;
- a `jobs.intervene` output: per-stage KL, loss, top-1 and per-layer change as charts;
- an activation store: per-hook activation-norm histograms from a sample of its units.

The site goes to --out (default: IN-report beside IN) and opens from file://.
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs.cli import add_debug_flag, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", help="a sae_stats output, an intervention output, or a store (folder or s3://)"
    )
    parser.add_argument("--eval", help="a jobs.eval_sae output to add to a feature report")
    parser.add_argument("--out", help="the site folder or s3:// prefix (default: SOURCE-report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="report the committed units of an unfinished store (refused otherwise)",
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_job(lambda: report_job(args), debug=args.debug)


def report_job(args: argparse.Namespace) -> int:
    from pipeline.report import write_report
    from pipeline.store.location import is_url, resolve

    source = resolve(args.source)  # a local folder, or a prefix on s3://
    site = resolve(args.out or f"{source}-report")
    eval_dir = resolve(args.eval) if args.eval else None
    started = time.perf_counter()
    kind, index = write_report(source, site, eval_dir, args.overwrite, args.partial)
    seconds = time.perf_counter() - started
    if is_url(index):
        print(
            f"{kind} report written in {seconds:.1f} s to {index}; copy it down to open it "
            f"(aws s3 cp --recursive {site} DIR) or serve the prefix as a static website"
        )
    else:
        print(f"{kind} report written in {seconds:.1f} s; open it in a browser: {index.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
