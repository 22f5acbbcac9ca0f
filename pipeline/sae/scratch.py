"""A reused CPU buffer for the pre-activations that `encode_sparse` throws away.

`encode_sparse` computes [N, F] pre-activations (24 MiB for 4096 rows of 1536 latents),
selects K of each row and drops the rest. Allocating that block afresh on every call
makes the encoder's speed depend on the allocator's state: glibc hands the top of its
heap back to the kernel once enough of it lies free, and the next call then faults every
page of a new block back in (6-8 ms of a ~30 ms call, in about one process in three; see
benchmarks/sae.py). Writing into one buffer kept per thread removes that dependence.

CPU only: on a GPU the caching allocator already reuses blocks. Only where no autograd
graph is built (the buffer is overwritten by the next call). One buffer per thread, so
threads encoding with one SAE never share it; dropped when the SAE is pickled or copied.
"""

from __future__ import annotations

import threading

import torch


class ScratchRows:
    """A [rows, columns] buffer per thread that grows to the largest request."""

    def __init__(self):
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._local = threading.local()

    def rows(self, num_rows: int, columns: int, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised [num_rows, columns] CPU tensor, valid until this thread's next call."""
        buffer = getattr(self._local, "buffer", None)
        if (
            buffer is None
            or buffer.shape[0] < num_rows
            or buffer.shape[1] != columns
            or buffer.dtype != dtype
            or buffer.is_inference() != torch.is_inference_mode_enabled()
        ):
            buffer = torch.empty(num_rows, columns, dtype=dtype)
            self._local.buffer = buffer
        return buffer[:num_rows]
