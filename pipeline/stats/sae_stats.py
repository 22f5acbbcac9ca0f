"""SAE feature statistics over an activation store: per-unit partials, merged, as tables.

`unit_feature_stats` is the map step (any process, any order), `FeatureStats.merge` the
reduce step; `pipeline.distributed.stats` runs the map as Ray tasks. The tables join each
top example back to its token through the store's token table, with text context from
the same window.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce
from pathlib import Path

import pandas as pd
import torch

from pipeline.model.defaults import default_model_path
from pipeline.model.render import TokenRenderer
from pipeline.progress import RowProgress
from pipeline.sae import Sae, load_sae
from pipeline.stats.features import FeatureStats
from pipeline.store.output_dir import OutputFolderError, claim_output_dir
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
    store: ActivationStore, hook: str, sae: Sae, unit: int, top_k: int = 10, batch_rows: int = 4096
) -> FeatureStats:
    """The partial statistics of one unit's rows."""
    start = unit * store.rows_per_unit
    stop = min(start + store.rows_per_unit, store.num_rows)
    stats = FeatureStats(sae.n_latents, top_k)
    with torch.no_grad():
        for lo in range(start, stop, batch_rows):
            hi = min(lo + batch_rows, stop)
            x_ND = torch.from_numpy(store.read(hook, slice(lo, hi))).to(sae.W_enc.dtype)
            values_NK, indices_NK = sae.encode_sparse(x_ND)
            stats.update(values_NK, indices_NK, torch.arange(lo, hi))
    return stats


def stats_for_units(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    units: Iterable[int],
    top_k: int,
    partial: bool = False,
    progress: RowProgress | None = None,
):
    """Merged statistics of several units (one map task's worth of work)."""
    store, model = ActivationStore.open(store_path, partial), open_sae(sae)
    check_widths(store, hook, model)

    # A generator, so each unit's partial is merged and dropped: memory stays O(latents)
    # however many units a task has.
    def partials():
        for unit in units:
            yield unit_feature_stats(store, hook, model, unit, top_k)
            if progress is not None:
                start, stop = store.index.unit_rows(unit)
                progress.advance(stop - start)

    return reduce(FeatureStats.merge, partials(), FeatureStats(model.n_latents, top_k))


def sae_feature_stats(
    store_path: str | Path,
    hook: str,
    sae: Sae | str | Path,
    top_k: int = 10,
    partial: bool = False,
    progress: bool = False,
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
        return stats_for_units(store_path, hook, sae, units, top_k, partial, meter)
    finally:
        if meter is not None:
            meter.close()


def renderer_for_store(store: ActivationStore) -> TokenRenderer | None:
    """The store's tokenizer as a renderer, or None when its model folder is not here."""
    name = store.meta["fingerprint"]["model"]
    path = default_model_path() if name.startswith("embedded:") else Path(name)
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    return TokenRenderer(AutoTokenizer.from_pretrained(path))


def context_text(
    tokens: pd.DataFrame, row: int, width: int, renderer: TokenRenderer | None = None
) -> tuple[str, str]:
    """(the example's window around it with the example in [[ ]], the example's text).

    Decoded by the store's tokenizer when `renderer` is given; otherwise the raw tokens
    joined by spaces (the store's model folder is not on this machine).
    """
    here = tokens.loc[row]
    same_window = tokens[(tokens.window == here.window) & (abs(tokens.index - row) <= width)]
    if renderer is not None:
        ids = same_window.token_id.tolist()
        return renderer.context(ids, list(same_window.index).index(row))
    parts = [
        f"[[{t}]]" if r == row else str(t)
        for r, t in zip(same_window.index, same_window.token, strict=True)
    ]
    return " ".join(parts), str(here.token)


STATS_OUTPUTS = ("features.parquet", "examples.parquet")


def claim_stats_output(out: str | Path, overwrite: bool = False) -> Path:
    """Check `out` may receive the tables, before any statistic is computed.

    Refuses a file, an activation store, a folder holding anything but our two tables,
    and, unless `overwrite`, earlier tables (which `overwrite` then removes).
    """
    out = Path(out)
    if claim_output_dir(out, STATS_OUTPUTS, "sae_stats", overwrite):
        raise OutputFolderError(
            f"sae_stats: {out} already holds feature tables; pass --overwrite (overwrite=True) "
            "to replace them, or choose another --out"
        )
    return out


def write_feature_tables(
    stats: FeatureStats,
    store_path: str | Path,
    out: str | Path,
    context: int = 8,
    overwrite: bool = False,
    top_k: int | None = None,
    dedupe: bool = True,
) -> Path:
    """`features.parquet` (one row per latent) and `examples.parquet` (top examples with text).

    `dedupe`: a latent's examples whose context text repeats an earlier (stronger) one are
    dropped, so a passage duplicated in the corpus is listed once; compute `stats` with
    more candidates than `top_k` (the job takes twice as many) so that `top_k` remain.
    """
    out = claim_stats_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    store = ActivationStore.open(store_path)
    stats.features_frame().to_parquet(out / "features.parquet", index=False)
    examples = stats.examples_frame()
    rows = sorted(
        {
            int(r) + d
            for r in examples.row
            for d in range(-context, context + 1)
            if 0 <= int(r) + d < store.num_rows
        }
    )
    tokens = store.tokens(rows=rows).to_pandas().set_index("row") if rows else pd.DataFrame()
    if len(examples):
        renderer = renderer_for_store(store)
        examples = examples.join(tokens[["doc_id", "window", "position", "token"]], on="row")
        rendered = [context_text(tokens, int(r), context, renderer) for r in examples.row]
        examples["token_text"] = [text for _, text in rendered]
        examples["context"] = [marked for marked, _ in rendered]
        if dedupe:  # rows are in (latent, rank) order: the first of equal contexts is kept
            examples = examples.drop_duplicates(["latent", "context"], keep="first")
        if top_k is not None:
            examples = examples.groupby("latent", sort=False).head(top_k)
        examples = examples.assign(rank=examples.groupby("latent").cumcount()).reset_index(
            drop=True
        )
    examples.to_parquet(out / "examples.parquet", index=False)
    return out
