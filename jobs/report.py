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
from pathlib import Path

from jobs.cli import add_debug_flag, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="a sae_stats output, an intervention output, or a store")
    parser.add_argument("--eval", help="a jobs.eval_sae output to add to a feature report")
    parser.add_argument("--out", help="the site folder (default: SOURCE-report)")
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
    from pipeline.store.location import is_url, local_output

    if is_url(args.source):
        raise ValueError(
            f"the report reads a local folder; {args.source} is on object storage: copy it "
            "down first (for a store, the norms need only a few units: `jobs.report` of a "
            "store on s3:// is not supported yet)"
        )
    if args.out:
        local_output(args.out, "--out")
    source = Path(args.source).expanduser().resolve()
    site = Path(args.out or f"{source}-report").expanduser().resolve()
    started = time.perf_counter()
    kind, index = write_report(source, site, args.eval, args.overwrite, args.partial)
    seconds = time.perf_counter() - started
    print(f"{kind} report written in {seconds:.1f} s; open it in a browser: {index.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
