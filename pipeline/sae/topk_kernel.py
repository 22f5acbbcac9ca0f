"""Row-wise top-k indices on CPU, compiled with numba: exact, about twice `select`'s speed.

`torch.topk` and the two-stage selection in `select.py` spend ~10 ns per element on CPU
copying rows into (value, index) pairs and partially sorting them. An SAE's rows look
alike, so most of that work can be skipped: the k-th largest value of one row is a good
guess of a threshold for the next, and only the few entries above it need sorting.

Per row:
  1. Collect the entries >= `tau` (the previous row's k-th value minus a slack). If
     fewer than k qualify, the guess was too high: compute a threshold that is certainly
     low enough, the k-th largest of the strided group maxima (see `select.py`; k groups
     whose maxima reach it hold k entries at least that large), and collect again.
  2. A size-k min-heap over the candidates keeps the k largest.
The slack doubles after a miss and shrinks while candidates are plentiful, so the
candidate count stays near k whatever the scale of the activations.
The guess only decides speed, never the result: the threshold of step 1 is always at
most the row's k-th value, so every top-k entry is a candidate. Rows the kernel cannot
settle (those holding NaN, which `torch.topk` ranks above everything) are flagged and
redone with `torch.topk`.

Rows are split into chunks of `ROWS_PER_CHUNK`, one per parallel task, each carrying its
own guess; with one torch thread the same loop runs serially, without numba's thread pool. numba is optional: without it `available()` is False and callers fall back.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this guards odd platforms
    numba = None

ROWS_PER_CHUNK = 64


def available() -> bool:
    return numba is not None


def topk_indices(pre_NF: torch.Tensor, k: int, group_size: int) -> torch.Tensor:
    """Indices [N, K] (int64, in no particular order) of each row's k largest entries.

    `pre_NF`: a float32 CPU tensor; `group_size` divides its width (the fallback threshold's
    groups). Runs on as many threads as torch is set to use.
    """
    rows_NF = pre_NF.detach().contiguous().numpy()
    num_rows = rows_NF.shape[0]
    indices_NK = np.empty((num_rows, k), dtype=np.int64)
    unsettled_N = np.zeros(num_rows, dtype=np.bool_)
    if num_rows:
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        if threads == 1:
            _SERIAL_KERNEL(rows_NF, k, group_size, indices_NK, unsettled_N)
        else:
            numba.set_num_threads(threads)
            _KERNEL(rows_NF, k, group_size, indices_NK, unsettled_N)
    result_NK = torch.from_numpy(indices_NK)
    if unsettled_N.any():
        redo = torch.from_numpy(np.flatnonzero(unsettled_N))
        result_NK[redo] = pre_NF.detach()[redo].topk(k, dim=1, sorted=False).indices
    return result_NK


def _sift_down(values, slots, position, value, slot, k):
    """Place (value, slot) at `position` of the size-k min-heap, moving smaller children up."""
    while True:
        child = 2 * position + 1
        if child >= k:
            break
        if child + 1 < k and values[child + 1] < values[child]:
            child += 1
        if values[child] < value:
            values[position] = values[child]
            slots[position] = slots[child]
            position = child
        else:
            break
    values[position] = value
    slots[position] = slot


def _heap_select(values, slots, count, k, heap_values, heap_slots):
    """The k largest of values[:count] (count >= k) into the heap arrays; root = k-th."""
    for j in range(k):
        heap_values[j] = values[j]
        heap_slots[j] = slots[j]
    for start in range(k // 2 - 1, -1, -1):
        _sift_down(heap_values, heap_slots, start, heap_values[start], heap_slots[start], k)
    for j in range(k, count):
        if values[j] > heap_values[0]:
            _sift_down(heap_values, heap_slots, 0, values[j], slots[j], k)


def _collect(row, tau, values, slots):
    """Entries of `row` >= tau into values/slots; returns how many."""
    count = 0
    for j in range(row.shape[0]):
        value = row[j]
        if value >= tau:
            values[count] = value
            slots[count] = j
            count += 1
    return count


def _has_nan(row):
    """Whether `row` holds a NaN (a branch-free count, so it vectorises)."""
    nans = 0
    for j in range(row.shape[0]):
        nans += row[j] != row[j]
    return nans > 0


def _rows_topk(rows_NF, k, group_size, indices_NK, unsettled_N):
    num_rows, num_latents = rows_NF.shape
    num_groups = num_latents // group_size
    num_chunks = (num_rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    for chunk in numba.prange(num_chunks):
        group_max_G = np.empty(num_groups, np.float32)
        group_ids_G = np.arange(num_groups)
        heap_values = np.empty(k, np.float32)
        heap_slots = np.empty(k, np.int64)
        values = np.empty(num_latents, np.float32)
        slots = np.empty(num_latents, np.int64)
        tau = np.float32(np.inf)  # no guess for the chunk's first row
        slack = np.float32(0.0)
        for r in range(chunk * ROWS_PER_CHUNK, min(num_rows, (chunk + 1) * ROWS_PER_CHUNK)):
            row = rows_NF[r]
            if _has_nan(row):  # torch.topk ranks NaN above everything; leave such rows to it
                unsettled_N[r] = True
                continue
            count = _collect(row, tau, values, slots)
            if count < k:
                if tau != np.inf:
                    slack = slack * 2 + np.float32(1e-3) * abs(tau)
                for g in range(num_groups):
                    group_max_G[g] = row[g]
                for s in range(1, group_size):
                    base = s * num_groups
                    for g in range(num_groups):
                        group_max_G[g] = max(group_max_G[g], row[base + g])
                _heap_select(group_max_G, group_ids_G, num_groups, k, heap_values, heap_slots)
                count = _collect(row, heap_values[0], values, slots)
                if count < k:
                    unsettled_N[r] = True
                    tau = np.float32(np.inf)
                    continue
            elif count > 3 * k:
                slack *= np.float32(0.7)
            _heap_select(values, slots, count, k, heap_values, indices_NK[r])
            tau = heap_values[0] - slack


def _rows_topk_parallel(rows_NF, k, group_size, indices_NK, unsettled_N):
    _rows_topk(rows_NF, k, group_size, indices_NK, unsettled_N)


def _rows_topk_serial(rows_NF, k, group_size, indices_NK, unsettled_N):
    """The same loop compiled without `parallel`: its own function, so numba's on-disk
    cache (keyed by function) never hands it the parallel build."""
    _rows_topk(rows_NF, k, group_size, indices_NK, unsettled_N)


if numba is not None:
    _sift_down = numba.njit(inline="always", nogil=True)(_sift_down)
    _heap_select = numba.njit(inline="always", nogil=True)(_heap_select)
    _collect = numba.njit(inline="always", nogil=True)(_collect)
    _has_nan = numba.njit(inline="always", nogil=True)(_has_nan)
    _rows_topk = numba.njit(inline="always", nogil=True)(_rows_topk)
    _KERNEL = numba.njit(parallel=True, nogil=True, cache=True)(_rows_topk_parallel)
    # One thread: a plain loop. The parallel kernel would start numba's OpenMP pool, whose
    # idle threads spin and take CPU from the other one-thread processes on the machine
    # (two Ray tasks on 2 cores ran 3.5x slower each; see docs/performance.md).
    _SERIAL_KERNEL = numba.njit(nogil=True, cache=True)(_rows_topk_serial)
