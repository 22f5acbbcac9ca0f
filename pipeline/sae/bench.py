"""Encoding throughput of `TopKSae` against a bare `x @ W_enc` of the same shapes.

Default shape: MiniLM width (d=384), 4x expansion (1536 latents), k=32, 4096 rows.
Target (issue 5): `encode_topk` runs at >= 70% of the bare matmul's rows per second on CPU.
`run()` is the `python -m jobs.benchmark` entry point; `encode_throughput()` returns the
numbers for other callers.
"""

from __future__ import annotations

import torch

from pipeline.bench.timing import interleaved, markdown_table
from pipeline.sae.architectures import TopKSae


def encode_throughput(
    num_rows: int = 4096,
    n_inputs: int = 384,
    n_latents: int = 1536,
    k: int = 32,
    rounds: int = 7,
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Rows per second of the bare matmul, `encode_topk` and `encode`, and their ratios."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    sae = TopKSae(n_latents, n_inputs, k, device=device)
    x_ND = torch.randn(num_rows, n_inputs, device=device)
    w_DF = sae.W_enc.detach()

    def timed(fn):
        def case():
            with torch.no_grad():
                fn()
            if device != "cpu":
                torch.cuda.synchronize()

        return case

    timings = interleaved(
        {
            "matmul": timed(lambda: x_ND @ w_DF),
            "encode_topk": timed(lambda: sae.encode_topk(x_ND)),
            "encode": timed(lambda: sae.encode(x_ND)),
        },
        rounds=rounds,
    )
    rates = {name: num_rows / timing.median for name, timing in timings.items()}
    return {
        "matmul_rows_per_s": rates["matmul"],
        "encode_topk_rows_per_s": rates["encode_topk"],
        "encode_rows_per_s": rates["encode"],
        "encode_topk_ratio": rates["encode_topk"] / rates["matmul"],
        "encode_ratio": rates["encode"] / rates["matmul"],
    }


def run(rounds: int = 7, threads: int | None = None, device: str = "cpu") -> str:
    result = encode_throughput(rounds=rounds, threads=threads, device=device)
    rows = [
        ["x @ W_enc (baseline)", result["matmul_rows_per_s"], 1.0],
        ["TopKSae.encode_topk", result["encode_topk_rows_per_s"], result["encode_topk_ratio"]],
        ["TopKSae.encode (dense)", result["encode_rows_per_s"], result["encode_ratio"]],
    ]
    return markdown_table(["case (4096 x 384 -> 1536, k=32)", "rows/s", "vs matmul"], rows)
