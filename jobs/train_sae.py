"""`python -m jobs.train_sae`: train an SAE on one hook of an activation store.

    python -m jobs.train_sae --store stores/capture --hook layer_3 \
        --n-latents 6144 --k 32 --steps 20000 --out runs/sae-l3
    python -m jobs.train_sae --store stores/capture --hook layer_3 --architecture relu \
        --n-latents 6144 --l1-coefficient 5 --steps 20000 --out runs/sae-l3-relu
    python -m jobs.train_sae --store stores/capture --hook layer_3 --architecture jumprelu \
        --n-latents 6144 --l0-coefficient 1 --bandwidth 0.05 --steps 20000 --out runs/sae-l3-jr

Writes checkpoints to OUT/checkpoints/step_N (resume with --resume that folder), metrics
to OUT/metrics.jsonl and the final SAE to OUT/sae (load it with `load_sae`).
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import add_debug_flag, run_job


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m jobs.train_sae",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="activation store directory")
    parser.add_argument("--hook", required=True, help="hook (layer) name in the store")
    parser.add_argument("--n-latents", type=int, required=True, help="dictionary size")
    parser.add_argument(
        "--architecture",
        choices=["topk", "relu", "jumprelu"],
        default="topk",
        help="SAE kind (default topk)",
    )
    parser.add_argument("--k", type=int, default=None, help="topk: active latents per token")
    parser.add_argument(
        "--l1-coefficient", type=float, default=None, help="relu: weight of the L1 penalty"
    )
    parser.add_argument(
        "--l0-coefficient", type=float, default=None, help="jumprelu: weight of the L0 penalty"
    )
    parser.add_argument(
        "--bandwidth",
        type=float,
        default=0.001,
        help="jumprelu: width of the threshold's gradient kernel, in activation units "
        "(default 0.001)",
    )
    parser.add_argument(
        "--threshold-init",
        type=float,
        default=0.001,
        help="jumprelu: starting threshold of every latent (default 0.001)",
    )
    parser.add_argument(
        "--sparsity-warmup-steps",
        type=int,
        default=0,
        help="relu/jumprelu: steps over which the penalty ramps up from 0 (default 0)",
    )
    parser.add_argument(
        "--steps", type=int, default=10_000, help="total optimiser steps (default 10000)"
    )
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per step (default 4096)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    parser.add_argument(
        "--buffer-size", type=int, default=None, help="shuffle buffer rows (default 16 batches)"
    )
    parser.add_argument(
        "--dead-after-tokens",
        type=int,
        default=10_000_000,
        help="rows without firing before a latent counts as dead (the dead fraction uses "
        "this or the rows seen so far, whichever is fewer; default 10000000)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="steps between checkpoints (0: only at the end)",
    )
    parser.add_argument(
        "--eval-units",
        type=int,
        default=0,
        help="at each checkpoint, evaluate the SAE spliced into the model (CE loss recovered, "
        "KL) on the store's first N units; logged to OUT/checkpoint_evals.jsonl (default 0: off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--out", default="runs/sae", help="output folder or s3:// prefix (default runs/sae)"
    )
    parser.add_argument(
        "--resume", default=None, help="checkpoint folder (or s3:// prefix) to continue from"
    )
    parser.add_argument(
        "--normalize-activations",
        action="store_true",
        help="train on rows rescaled to mean squared norm n_inputs (folded into the saved SAE)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's files in --out"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="train on the committed units of an unfinished store (refused otherwise)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress (bar on a terminal, else a line per 10%%)"
    )
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_job(lambda: train_job(args), debug=args.debug)


def train_job(args: argparse.Namespace) -> int:
    from pipeline.sae.from_store import train_sae_from_store
    from pipeline.sae.trainer import TrainerConfig

    config = TrainerConfig(
        n_latents=args.n_latents,
        architecture=args.architecture,
        k=args.k,
        l1_coefficient=args.l1_coefficient,
        l0_coefficient=args.l0_coefficient,
        bandwidth=args.bandwidth,
        threshold_init=args.threshold_init,
        sparsity_warmup_steps=args.sparsity_warmup_steps,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        buffer_size=args.buffer_size or 16 * args.batch_size,
        dead_after_tokens=args.dead_after_tokens,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        normalize_activations=args.normalize_activations,
    )
    from pipeline.store.location import resolve, store_path

    out = resolve(args.out)  # a local folder, or a prefix on s3://
    on_checkpoint = None
    if args.eval_units:
        from pipeline.stats.checkpoint_eval import checkpoint_evaluator

        on_checkpoint = checkpoint_evaluator(
            resolve(args.store), args.hook, args.eval_units, store_path(out), args.partial,
            args.device,
        )  # fmt: skip
    trainer = train_sae_from_store(
        args.store,
        args.hook,
        config,
        out_dir=out,
        resume=args.resume,
        progress=not args.quiet,
        device=args.device,
        partial=args.partial,
        overwrite=args.overwrite,
        on_checkpoint=on_checkpoint,
    )
    print(f"trained to step {trainer.step}; SAE saved to {out}/sae")
    return 0


if __name__ == "__main__":
    sys.exit(main())
