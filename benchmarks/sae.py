"""Encoding throughput of `TopKSae` against a bare `x @ W_enc` of the same shapes.

Default shape: MiniLM width (d=384), 4x expansion (1536 latents), k=32, 4096 rows.
Target (issue 5): `encode_sparse` runs at >= 70% of the bare matmul's rows per second on CPU.
`run()` is the `python -m jobs.benchmark` entry point; `encode_throughput()` returns the
numbers for other callers.

No allocator setting is made: `encode_sparse` writes its [N, F] pre-activations into a
buffer the SAE reuses (pipeline/sae/scratch.py), and the baseline multiplies into a
preallocated output (`torch.mm(..., out=)`), so neither side's speed depends on whether
glibc has just handed freed heap memory back to the kernel. (Before the library reused
its buffer, about one process in three measured `encode_sparse` at 0.58-0.63 instead of
0.76-0.78 unless the benchmark froze glibc's trim threshold: each call faulted a fresh
24 MiB block back in while the bare matmul reused a warm one.)
"""

from __future__ import annotations

import torch

from benchmarks.timing import interleaved, markdown_table
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
    """Rows per second of the bare matmul, `encode_sparse` and `encode`, and their ratios."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    sae = TopKSae(n_latents, n_inputs, k, device=device)
    x_ND = torch.randn(num_rows, n_inputs, device=device)
    w_DF = sae.W_enc.detach()
    out_NF = torch.empty(num_rows, n_latents, device=device)

    def timed(fn):
        def case():
            with torch.no_grad():
                fn()
            if device != "cpu":
                torch.cuda.synchronize()

        return case

    timings = interleaved(
        {
            "matmul": timed(lambda: torch.mm(x_ND, w_DF, out=out_NF)),
            "encode_sparse": timed(lambda: sae.encode_sparse(x_ND)),
            "encode": timed(lambda: sae.encode(x_ND)),
        },
        rounds=rounds,
    )
    rates = {name: num_rows / timing.median for name, timing in timings.items()}
    return {
        "matmul_rows_per_s": rates["matmul"],
        "encode_sparse_rows_per_s": rates["encode_sparse"],
        "encode_rows_per_s": rates["encode"],
        "encode_sparse_ratio": rates["encode_sparse"] / rates["matmul"],
        "encode_ratio": rates["encode"] / rates["matmul"],
    }


def run(rounds: int = 7, threads: int | None = None, device: str = "cpu") -> str:
    result = encode_throughput(rounds=rounds, threads=threads, device=device)
    rows = [
        ["x @ W_enc (baseline)", result["matmul_rows_per_s"], 1.0],
        [
            "TopKSae.encode_sparse",
            result["encode_sparse_rows_per_s"],
            result["encode_sparse_ratio"],
        ],
        ["TopKSae.encode (dense)", result["encode_rows_per_s"], result["encode_ratio"]],
    ]
    return markdown_table(["case (4096 x 384 -> 1536, k=32)", "rows/s", "vs matmul"], rows)
