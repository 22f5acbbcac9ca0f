"""`python -m jobs.eval_sae`: how well an SAE reconstructs one hook of a store.

From the stored activations: FVE, MSE, L0 (mean and histogram), dead and dense latents.
For the store's own model, on the windows of the first --max-units units (default all):
next-token CE loss clean / SAE spliced / hook zero-ablated, CE loss recovered and
KL(clean || spliced) for causal LMs; cosine of the final hidden states for encoders.
Writes OUT/eval.json and OUT/latents.parquet and prints a one-line summary. On Ray when
RAY_ADDRESS names a cluster or the store is large (more than 16 units: a local instance
is started); in this process with `--no-ray` or for a small store without a cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cli import add_stage_two_flags, add_store_sae_args, run_here, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.eval_sae",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_sae_args(parser)
    parser.add_argument("--out", help="output folder (default: eval-<hook> next to the SAE)")
    parser.add_argument(
        "--max-units", type=int, default=None, help="replay the windows of this many units"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu", help="device of the replay with --no-ray")
    add_stage_two_flags(parser)
    args = parser.parse_args(argv)
    return run_job(lambda: eval_job(args), debug=args.debug)


def eval_job(args: argparse.Namespace) -> int:
    from pipeline.store.location import resolve

    store, sae = resolve(args.store), resolve(args.sae)
    out = resolve(args.out or Path(sae).parent / f"eval-{args.hook}")  # s3:// as given
    if args.batch_size < 1 or (args.max_units is not None and args.max_units < 0):
        raise ValueError(
            f"--batch-size must be >= 1 and --max-units >= 0, got {args.batch_size}, "
            f"{args.max_units}"
        )
    from pipeline.sae import load_sae
    from pipeline.stats.eval import claim_eval_output, summary_line, write_eval
    from pipeline.stats.eval_replay import plan_units, provenance
    from pipeline.stats.provenance import checked_model_path
    from pipeline.stats.sae_stats import check_widths
    from pipeline.store.reader import ActivationStore

    # Every check before any work: the store (finished, or --partial), the hook and the
    # SAE's width, the model (when windows are replayed) and the output folder.
    opened = ActivationStore.open(store, args.partial)
    _, replay = plan_units(store, args.partial, args.max_units)
    check_widths(opened, args.hook, load_sae(sae))
    if replay:
        checked_model_path(opened)
    claim_eval_output(out, args.overwrite)
    local = run_here(args.no_ray, len(opened.data_units()))
    progress = not args.quiet
    if local:
        from pipeline.stats.eval_replay import evaluate_sae

        sums = evaluate_sae(
            store,
            args.hook,
            sae,
            args.max_units,
            args.partial,
            args.device,
            args.batch_size,
            progress=progress,
        )
    else:
        from pipeline.distributed.eval import evaluate_sae_on_ray

        sums = evaluate_sae_on_ray(
            store,
            args.hook,
            sae,
            args.max_units,
            args.partial,
            batch_size=args.batch_size,
            progress=progress,
        )
    document = write_eval(sums, provenance(store, args.hook, sae, replay), out, overwrite=True)
    print(summary_line(document))
    trained = document.get("sae_trained_on") or {}
    if trained:
        print(
            f"SAE trained on: store {trained.get('store')}, hook {trained.get('hook')}, "
            f"model {trained.get('model')}, {trained.get('rows_trained')} rows"
        )
    print(f"written: {out}/eval.json, {out}/latents.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
