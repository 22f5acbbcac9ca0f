"""`python -m jobs.benchmark WHAT`: the performance figures of docs/performance.md.

Each prints a Markdown table of ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib

SUITES = {
    "hooks": "pipeline.bench.hooks",
    "capture": "pipeline.bench.capture",
    "sae": "pipeline.sae.bench",
    "ray": "pipeline.bench.ray_capture",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=sorted(SUITES), help="which benchmark to run")
    parser.add_argument(
        "--rounds", type=int, default=7, help="timed rounds per case (medians are reported)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    module = importlib.import_module(SUITES[args.suite])
    print(module.run(rounds=args.rounds, threads=args.threads, device=args.device))


if __name__ == "__main__":
    main()
