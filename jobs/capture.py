"""`python -m jobs.capture`: capture activations of a corpus into a store.

With no arguments: the embedded defaults (MiniLM, the pydoc corpus, blocks 1, 3, 5,
float16) into ./stores/capture. On Ray by default (joins the cluster in RAY_ADDRESS,
e.g. inside `ray job submit`, else starts a local one); `--no-ray` runs in this process.

Output paths are made absolute before anything starts: a submitted job runs in a
temporary working directory, so give `--out` as an absolute path on shared storage there.
Config precedence: defaults < --config YAML < --set key=value < --out/--overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m jobs.capture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (see jobs/configs/)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--out", help="store directory (made absolute now)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing store with another config"
    )
    parser.add_argument(
        "--no-ray", action="store_true", help="capture in this process, without Ray"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pipeline.capture import capture, load_config

    config = load_config(args.config, args.set)
    out = Path(args.out or config.out).expanduser().resolve()
    config = replace(config, out=str(out), overwrite=args.overwrite or config.overwrite)
    if args.no_ray:
        result = capture(config, progress=not args.quiet)
    else:
        from pipeline.distributed import run_capture

        result = run_capture(config, progress=not args.quiet)
    print(f"store: {result.path}")
    print(
        f"  {result.num_rows} tokens, {result.num_units} units ({result.units_computed} computed now)"
    )
    print(f"  hooks: {', '.join(f'{h} (d={d})' for h, d in result.hooks.items())}")
    print("open it with:")
    print(f"  python -m jobs.inspect {result.path}")
    print(f"  pandas.read_parquet('{result.path}/tokens')")
    print(
        f"  zarr.open_group('{result.path}/activations.zarr', mode='r')['{next(iter(result.hooks))}']"
    )
    print(f"  pipeline.store.reader.ActivationStore.open('{result.path}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
