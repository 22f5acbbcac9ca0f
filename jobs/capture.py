"""`python -m jobs.capture`: capture activations of a corpus into a store.

With no arguments: the embedded defaults (MiniLM, the pydoc corpus, blocks 1, 3, 5,
float16) into ./stores/capture. On Ray by default (joins the cluster in RAY_ADDRESS,
e.g. inside `ray job submit`, else starts a local one); `--no-ray` runs in this process.

Output paths are made absolute before anything starts: a submitted job runs in a
temporary working directory, so give `--out` as an absolute path on shared storage there.
Config precedence: defaults < --config YAML < --set key=value < --out/--overwrite.

A rerun of the same command resumes an unfinished store; it first checks what it would
trust (each committed record and the files it names; with --verify, their checksums) and
recomputes what fails. Errors in the config, the corpus or the output path are one line on
stderr (exit status 2); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from jobs.cli import add_debug_flag, run_job


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
    parser.add_argument(
        "--verify",
        action="store_true",
        help="on a rerun, checksum every committed unit and plan part before trusting it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_job(lambda: capture_job(args), debug=args.debug)


def finishing_command(args: argparse.Namespace, out: Path) -> str:
    """The command that resumes this capture from any folder (recorded in the store)."""
    words = ["python", "-m", "jobs.capture"]
    if args.config:
        words += ["--config", str(Path(args.config).expanduser().resolve())]
    for pair in args.set:
        words += ["--set", pair]
    if args.no_ray:
        words.append("--no-ray")
    return shlex.join([*words, "--out", str(out)])


def capture_job(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    from pipeline.capture import capture, load_config
    from pipeline.store.location import resolve

    # The ray: section is checked even with --no-ray, where it is unused.
    config, ray_config = load_config(args.config, args.set)
    out = resolve(args.out or config.out)  # a folder made absolute, or an s3:// URL as given
    config = replace(
        config,
        out=str(out),
        overwrite=args.overwrite or config.overwrite,
        verify=args.verify or config.verify,
    )
    command = finishing_command(args, out)
    if args.no_ray:
        result = capture(config, progress=not args.quiet, command=command)
    else:
        from pipeline.distributed import run_capture

        result = run_capture(config, ray_config, progress=not args.quiet, command=command)
    print(f"store: {result.path}")
    print(
        f"  {result.num_rows} tokens, {result.num_units} units ({result.units_computed} computed now)"
    )
    if result.repairs:
        print(
            f"  {len(result.repairs)} committed parts or units failed their checks and were redone"
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
