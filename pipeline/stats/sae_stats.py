"""SAE feature statistics over an activation store: per-unit partials, merged, as tables.

`unit_feature_stats` is the map step (any process, any order), `FeatureStats.merge` the
reduce step; `pipeline.distributed.stats` runs the map as Ray tasks. The tables join each
top example back to its token through the store's token table, with text context from
the same window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from pipeline.model import LanguageModel
from pipeline.model.defaults import default_model_path
from pipeline.model.remote import local_model_folder
from pipeline.model.render import TokenRenderer
from pipeline.progress import RowProgress
from pipeline.sae import Sae, load_sae
from pipeline.stats.contexts import add_contexts
from pipeline.stats.eval import DENSE_FREQUENCY
from pipeline.stats.features import ACTIVATION_BIN_EDGES, FeatureStats
from pipeline.stats.logit_effects import output_token_effects
from pipeline.stats.provenance import checked_model_path, trained_on
from pipeline.store.location import is_url, parquet_writer, write_frame
from pipeline.store.output_dir import claim_fresh_output
from pipeline.store.reader import ActivationStore


def open_sae(sae: Sae | str | Path) -> Sae:
    return sae if isinstance(sae, Sae) else load_sae(sae)


def check_widths(store: ActivationStore, hook: str, sae: Sae) -> None:
    if hook not in store.hooks:
        raise ValueError(
            f"hook {hook!r} is not in the store at {store.root}; it has {', '.join(store.hooks)}"
        )
    if store.d(hook) != sae.n_inputs:
        raise ValueError(
            f"the SAE takes {sae.n_inputs} inputs but hook {hook!r} of {store.root} has width {store.d(hook)}"
        )


def unit_feature_stats(
    store: ActivationStore,
    hook: str,
    sae: Sae,
    unit: int,
    top_k: int = 10,
    samples: int = 20,
    batch_rows: int = 4096,
) -> FeatureStats:
    """The partial statistics of one unit's rows."""
    stats = FeatureStats(sae.n_latents, top_k, samples)
    add_unit(stats, store, hook, sae, unit, batch_rows)
    return stats


def add_unit(
    stats: FeatureStats,
    store: ActivationStore,
    hook: str,
    sae: Sae,
    unit: int,
    batch_rows: int = 4096,
) -> None:
    """Encode one unit's rows and add them to `stats`."""
    start = unit * store.rows_per_unit
    stop = min(start + store.rows_per_unit, store.num_rows)
    with torch.no_grad():
        for lo in range(start, stop, batch_rows):
            hi = min(lo + batch_rows, stop)
            x_ND = torch.from_numpy(store.read(hook, slice(lo, hi))).to(sae.W_enc.dtype)
            values_NK, indices_NK = sae.encode_sparse(x_ND)
            stats.update(values_NK, indices_NK, torch.arange(lo, hi))


def stats_for_units(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    units: Iterable[int],
    top_k: int,
    partial: bool = False,
    progress: RowProgress | None = None,
    samples: int = 20,
):
    """The statistics of several units (one map task's worth of work)."""
    store, model = ActivationStore.open(store_path, partial), open_sae(sae)
    check_widths(store, hook, model)

    # One accumulator for all of the task's units: equal to merging per-unit partials
    # (the statistics do not depend on grouping), and cheaper, since once a latent's
    # top-k and sample are full most candidates are dropped before any sorting.
    stats = FeatureStats(model.n_latents, top_k, samples)
    for unit in units:
        add_unit(stats, store, hook, model, unit)
        if progress is not None:
            start, stop = store.index.unit_rows(unit)
            progress.advance(stop - start)
    return stats


def sae_feature_stats(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    top_k: int = 10,
    partial: bool = False,
    progress: bool = False,
    samples: int = 20,
) -> FeatureStats:
    """Statistics of every row of `hook` in the store, in this process.

    An unfinished store is refused (`UnfinishedStoreError`) unless `partial`: then only
    its committed units count (`num_tokens` says how many rows that was). `progress`: a
    bar on a terminal, a line every 10 s elsewhere.
    """
    store = ActivationStore.open(store_path, partial)
    units = store.data_units()
    meter = RowProgress(sum(b - a for a, b in store.data_row_runs())) if progress else None
    try:
        return stats_for_units(store_path, hook, sae, units, top_k, partial, meter, samples)
    finally:
        if meter is not None:
            meter.close()


def renderer_for_store(store: ActivationStore) -> TokenRenderer | None:
    """The store's tokenizer as a renderer, or None when its model folder is not here."""
    name = store.meta["fingerprint"]["model"]
    if name.startswith("embedded:"):
        path = default_model_path()
    elif is_url(name):
        path = local_model_folder(name)  # this node's cached copy of the store's model
    else:
        path = Path(name)
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    return TokenRenderer(AutoTokenizer.from_pretrained(path))


EXAMPLE_ROW_GROUP = 20_000
CONTEXT_BLOCK = 2048  # latents whose contexts are built at once
EXAMPLE_SCHEMA = pa.schema(
    [
        ("latent", pa.int64()),
        ("rank", pa.int64()),
        ("activation", pa.float64()),
        ("row", pa.int64()),
        ("kind", pa.string()),
        ("doc_id", pa.int64()),
        ("window", pa.int64()),
        ("position", pa.int64()),
        ("token", pa.string()),
        ("token_text", pa.string()),
        ("context", pa.string()),
        ("context_tokens", pa.list_(pa.string())),
        ("context_activations", pa.list_(pa.float32())),
        ("context_index", pa.int32()),
    ]
)
STATS_OUTPUTS = ("features.parquet", "examples.parquet", "logits.parquet", "stats.json")


def claim_stats_output(out: str | Path, overwrite: bool = False) -> Path:
    """Check `out` may receive the tables, before any statistic is computed.

    Refuses a file, an activation store, a folder holding anything but our tables,
    and, unless `overwrite`, earlier tables (which `overwrite` then removes).
    """
    return claim_fresh_output(out, STATS_OUTPUTS, "sae_stats", "feature tables", overwrite)


def write_feature_tables(
    stats: FeatureStats,
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    out: str | Path,
    context: int = 8,
    overwrite: bool = False,
    top_k: int | None = None,
    dedupe: bool = True,
    logit_tokens: int = 10,
) -> Path:
    """The feature tables of `stats`, with text, for people and for `jobs.report`.

    - `features.parquet`: one row per latent (counts, frequency, mean/std while active,
      max, `histogram` over `ACTIVATION_BIN_EDGES`);
    - `examples.parquet`: per latent its top examples (`kind` "top", by activation) and
      a uniform sample of its firings (`kind` "sample"), each with its token, decoded
      context with the token marked, every context token's text and the latent's
      activation on it (for shading; `sae` encodes the context rows of `hook` again);
    - `logits.parquet` (causal LMs whose unembedding the hook feeds): output tokens each latent's decoder
      direction promotes and suppresses (`pipeline/stats/logit_effects.py`);
    - `stats.json`: what was computed from what, the L0 histogram and the bin edges.

    `dedupe`: a latent's examples whose context text repeats an earlier (stronger) one are
    dropped, so a passage duplicated in the corpus is listed once; compute `stats` with
    more candidates than `top_k` (the job takes twice as many) so that `top_k` remain.
    """
    out = claim_stats_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    store = ActivationStore.open(store_path, partial=True)
    model = open_sae(sae)
    check_widths(store, hook, model)
    write_frame(stats.features_frame(), out / "features.parquet")
    renderer = renderer_for_store(store)
    candidates = pd.concat(
        [
            stats.examples_frame().assign(kind="top"),
            stats.samples_frame().assign(kind="sample", activation=float("nan")),
        ],
        ignore_index=True,
    )
    # A block of latents at a time: memory holds one block's contexts, however wide the SAE.
    with parquet_writer(out / "examples.parquet", EXAMPLE_SCHEMA) as writer:
        for lo in range(0, stats.num_latents, CONTEXT_BLOCK):
            block = candidates[candidates.latent.between(lo, lo + CONTEXT_BLOCK - 1)]
            if block.empty:  # no latent of the block ever fired
                continue
            block = add_contexts(block, store, hook, model, context, renderer)
            block = select_examples(block, top_k, dedupe)
            table = pa.Table.from_pandas(block, schema=EXAMPLE_SCHEMA, preserve_index=False)
            writer.write_table(table, row_group_size=EXAMPLE_ROW_GROUP)
    logits_note = write_logit_table(store, model, out / "logits.parquet", logit_tokens)
    document = {
        "store": str(store_path),
        "hook": hook,
        "sae": None if isinstance(sae, Sae) else str(sae),
        "model": store.meta["fingerprint"].get("model"),
        "num_tokens": stats.num_tokens,
        "num_latents": stats.num_latents,
        "top_k": top_k or stats.top_k,
        "samples": stats.num_samples,
        "context": context,
        "deduplicated": dedupe,
        "dead_count": int((stats.count_F == 0).sum()),
        "dense_frequency": DENSE_FREQUENCY,
        "dense_count": int((stats.count_F > DENSE_FREQUENCY * max(stats.num_tokens, 1)).sum()),
        "l0_histogram": stats.l0_hist.tolist(),
        "activation_bin_edges": ACTIVATION_BIN_EDGES.tolist(),
        "output_tokens": logits_note,
        "sae_trained_on": {} if isinstance(sae, Sae) else trained_on(sae),
    }
    (out / "stats.json").write_text(json.dumps(document, indent=2) + "\n")
    return out


def select_examples(examples: pd.DataFrame, top_k: int | None, dedupe: bool) -> pd.DataFrame:
    """Duplicates dropped (`dedupe`), `top_k` top examples kept, ranks renumbered, sorted by
    (latent, top before sample, rank) so readers of some latents skip the rest."""
    if dedupe:  # rows are in (kind, latent, rank) order: the first of equal contexts is kept
        examples = examples.drop_duplicates(["kind", "latent", "context"], keep="first")
    if top_k is not None:
        top = examples.kind == "top"
        examples = pd.concat(
            [examples[top].groupby("latent", sort=False).head(top_k), examples[~top]]
        )
    examples = examples.assign(rank=examples.groupby(["kind", "latent"]).cumcount())
    examples = examples.sort_values(["latent", "kind", "rank"], ascending=[True, False, True])
    return examples.reset_index(drop=True)


def write_logit_table(store: ActivationStore, sae: Sae, path: Path, top: int) -> str:
    """Write the promoted/suppressed output tokens when the store's model has an
    unembedding the hook feeds; return how they were computed, or why there are none."""
    try:
        model_path = checked_model_path(store)
    except ValueError as e:
        return f"not computed: {e}"
    lm = LanguageModel.from_pretrained(model_path)
    table, how = output_token_effects(sae, lm, top)
    if table is None:
        return f"not computed: {how}"
    write_frame(table, path)
    return how
