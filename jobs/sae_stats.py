"""`python -m jobs.sae_stats`: SAE feature statistics over one hook of a store.

Writes OUT/features.parquet (per latent: times fired, frequency, mean/std while active,
max, activation histogram), OUT/examples.parquet (per latent, the top-k activating tokens
and a uniform sample of its firings, each with doc id, position, token, text context and
the latent's activation on every context token), OUT/logits.parquet (causal LMs: output
tokens each latent promotes and suppresses) and OUT/stats.json. `python -m jobs.report
OUT` draws them. On Ray when RAY_ADDRESS names a cluster, or when no
cluster is given and the store has more than 16 units to read (a local Ray
instance then pays for its start-up); otherwise in this process, saying so. `--no-ray`
always runs here.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import add_stage_two_flags, add_store_sae_args, run_here, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.sae_stats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_sae_args(parser)
    parser.add_argument("--out", required=True, help="output folder (or s3:// URL) for the tables")
    parser.add_argument("--top-k", type=int, default=10, help="examples kept per latent")
    parser.add_argument(
        "--samples",
        type=int,
        default=20,
        help="firings sampled uniformly per latent (the dashboard's lower quantiles)",
    )
    parser.add_argument("--context", type=int, default=8, help="tokens of context on each side")
    parser.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="list examples whose context text repeats a stronger one (dropped by default)",
    )
    add_stage_two_flags(parser)
    args = parser.parse_args(argv)
    return run_job(lambda: stats_job(args), debug=args.debug)


def stats_job(args: argparse.Namespace) -> int:
    from pipeline.store.location import is_url, resolve

    # Local folders made absolute; s3:// URLs as given.
    store, sae, out = (
        resolve(args.store),
        resolve(args.sae),
        resolve(args.out),
    )
    for flag, value, least in (("--top-k", args.top_k, 1), ("--samples", args.samples, 1),
                               ("--context", args.context, 0)):  # fmt: skip
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    from pipeline.sae import load_sae
    from pipeline.stats.sae_stats import check_widths, claim_stats_output
    from pipeline.store.reader import ActivationStore

    # Every check before any statistic is computed: the store (finished, or --partial),
    # the hook and the SAE's width, and the output folder.
    opened = ActivationStore.open(store, args.partial)
    units = opened.data_units()
    check_widths(opened, args.hook, load_sae(sae))
    claim_stats_output(out, args.overwrite)
    local = run_here(args.no_ray, len(units))
    progress = not args.quiet
    dedupe = not args.keep_duplicates
    candidates = 2 * args.top_k if dedupe else args.top_k  # duplicates dropped, k remain
    if local:
        from pipeline.stats import sae_feature_stats as compute
    else:
        from pipeline.distributed.stats import sae_feature_stats_on_ray as compute
    stats = compute(
        store,
        args.hook,
        sae,
        top_k=candidates,
        partial=args.partial,
        progress=progress,
        samples=args.samples,
    )
    from pipeline.stats import write_feature_tables
    from pipeline.stats.sae_stats import STATS_OUTPUTS

    folder = write_feature_tables(
        stats,
        store,
        args.hook,
        sae,
        out,
        context=args.context,
        overwrite=True,
        top_k=args.top_k,
        dedupe=dedupe,
    )
    alive = int((stats.count_F > 0).sum())
    print(f"{stats.num_tokens} tokens, {alive}/{stats.num_latents} latents fired")
    written = [name for name in STATS_OUTPUTS if (folder / name).exists()]
    print(f"written to {folder}: {', '.join(written)}")
    if is_url(folder):
        print("see them: copy the folder down, then python -m jobs.report FOLDER")
    else:
        print(f"see them: python -m jobs.report {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
