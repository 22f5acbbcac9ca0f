"""`python -m jobs.benchmark SUITE`: the performance figures of docs/performance.md.

Each suite prints a Markdown table of ratios against a baseline measured in the same run.
`python -m jobs.benchmark --gpu` runs the GPU suite (bf16 GPT-2-small shape on cuda).
The suites live in the repository's top-level `benchmarks/` package, which is not part of
the installed library: run this from the root of a checkout.
"""

from __future__ import annotations

import argparse
import importlib

SUITES = {
    "hooks": "benchmarks.hooks",
    "capture": "benchmarks.capture",
    "sae": "benchmarks.sae",
    "store": "benchmarks.store",
    "ray": "benchmarks.ray_capture",
    "gpu": "benchmarks.gpu",
    "memory": "benchmarks.memory",
    "capture-ab": "benchmarks.capture:run_pipelining_ab",
    "interventions": "benchmarks.interventions",
    "interventions-passes": "benchmarks.interventions:run_passes",
    "sae-stats": "benchmarks.sae_stats",
    "scale": "benchmarks.scale",
    "scale-e2e": "benchmarks.scale_e2e",
    "recheck": "benchmarks.recheck",
    "report": "benchmarks.report",
    "s3-capture": "benchmarks.s3_capture",
    "s3-memory": "benchmarks.s3_memory",
    "alternatives": "benchmarks.alternatives",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", nargs="?", choices=sorted(SUITES), help="which benchmark to run")
    parser.add_argument("--gpu", action="store_true", help="run the GPU suite on cuda")
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds per case (medians are reported)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the suite's)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: cpu, cuda with --gpu)"
    )
    args = parser.parse_args(argv)
    suite = "gpu" if args.gpu else args.suite
    if suite is None:
        parser.error("name a suite or pass --gpu")
    device = args.device or ("cuda" if suite == "gpu" else "cpu")
    module_name, _, function = SUITES[suite].partition(":")
    run = getattr(importlib.import_module(module_name), function or "run")
    print(run(rounds=args.rounds, threads=args.threads, device=device))


if __name__ == "__main__":
    main()
