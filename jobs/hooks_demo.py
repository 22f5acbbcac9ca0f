"""`python -m jobs.hooks_demo`: a detector and a controller on the embedded MiniLM."""

from __future__ import annotations

import argparse

from pipeline.demo import run_hooks_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded MiniLM)")
    parser.add_argument("--layer", default="layer_3", help="layer to capture (default: layer_3)")
    parser.add_argument("--scale", type=float, default=1.5, help="factor applied at layer_1")
    args = parser.parse_args(argv)
    print(run_hooks_demo(args.model, args.layer, args.scale))


if __name__ == "__main__":
    main()
