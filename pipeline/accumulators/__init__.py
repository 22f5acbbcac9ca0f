"""Bounded, mergeable accumulators that activation detectors feed batch by batch.

Why they are built this way:

- Bounded: a detector may watch a whole corpus, so each accumulator holds a fixed-size state
  (N batches, ``capacity`` rows, four vectors of length F, or an [F, S] table) however many
  updates it sees.
- Mergeable: ``merge`` is associative and returns a new accumulator equal to one that saw
  both streams, so partials built on different Ray actors can be combined at the driver in
  any grouping. Inputs are never mutated: state tensors are replaced, never written in place,
  so a merged result may share tensors with its inputs safely.
- Exact where it can be: moments use Chan et al.'s parallel update in float64; the reservoir
  keeps the rows with the largest hash keys (bottom-k sampling), so a merge is just the top
  keys of the union; top-k examples break ties by lower row id, a total order that makes the
  result independent of batching and merge order.
- CPU only: inputs (torch tensors on any device, or numpy arrays) are detached and copied to
  CPU, so an accumulator never pins GPU memory and pickles cheaply to a Ray driver.

Shape legend: N rows in a batch, D features per row, F features (D seen as the leading axis of
per-feature state), K non-zero features per row of a sparse SAE code, S examples kept per
feature by TopKExamples (its ``k``), M rows held by the reservoir, C candidates per feature.
"""

from pipeline.accumulators.batches import LastNBatches
from pipeline.accumulators.common import uniform_keys
from pipeline.accumulators.moments import RunningMoments
from pipeline.accumulators.reservoir import ReservoirSample
from pipeline.accumulators.topk import TopKExamples

__all__ = ["LastNBatches", "ReservoirSample", "RunningMoments", "TopKExamples", "uniform_keys"]
