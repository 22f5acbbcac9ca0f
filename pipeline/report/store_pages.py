"""The report page of one activation store: `index.html`.

What the store is comes from `store.json` alone (model, hooks, sizes, corpus, the capture
command), so it costs the same at any size. Activation statistics cannot read the store at
10^9 rows, so they come from a sample of whole units, evenly spaced over the store's units
(first and last included): whole units because a unit is one Zarr shard per hook and one
or two token row groups, the cheapest thing to read; evenly spaced because neighbouring
units hold neighbouring documents, and a sample from the start alone would be one slice of
the corpus. The page says exactly how many rows of how many the statistics used.

An unfinished store holds zero fill in its pending units, so it is refused with the
store's own `UnfinishedStoreError` (which names the command that finishes it), unless
`partial=True`: then only committed units are sampled, and the page says so.

Legend: N sampled rows of a unit (or chunk of one), D a hook's width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report.site import esc, number, page, table, write_page
from pipeline.store.layout import STORE_JSON
from pipeline.store.location import store_path as location
from pipeline.store.reader import ActivationStore

NUM_BINS = 60
# Norms spanning more than this ratio (max / min) are binned on a log scale, so that a few
# huge norms (GPT-2's first position) do not squash the bulk into one bin.
LOG_BINS_ABOVE_RATIO = 20.0
READ_ROWS = 65_536  # rows read at once: one float32 [READ_ROWS, 768] block is 200 MB
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def is_store(path: Path) -> bool:
    """An activation store (finished or not): a folder with `store.json`."""
    return (location(path) / STORE_JSON).is_file()


def write_store_report(
    store_path: Path, site: Path, max_rows: int = 200_000, partial: bool = False
) -> Path:
    """Write `site/index.html` for the store at `store_path`; return the page's path.

    `max_rows`: about how many rows the activation statistics read (whole units, at least
    one). `partial`: report an unfinished store from its committed units instead of
    raising `UnfinishedStoreError`.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    store = ActivationStore.open(store_path, partial=partial)
    units = store.data_units()  # an unfinished store raises here unless partial
    sampled = sample_units(units, store.rows_per_unit, max_rows)
    spans = [store.index.unit_rows(unit) for unit in sampled]
    positions = _positions(store, spans)
    hooks = [_hook_data(store, hook, spans, positions) for hook in store.hooks]
    num_sampled = sum(stop - start for start, stop in spans)
    data = {
        "sample": {"units": sampled, "rows": num_sampled, "num_rows": store.num_rows},
        "hooks": hooks,
    }
    body = "\n".join(
        [
            _state(store, units),
            "<h2>The store</h2>",
            table(["field", "value"], _about(store), cls="kv"),
            "<h2>Hooks</h2>",
            table(
                ["hook", "module", "width", "dtype (logical / stored)", "bytes"],
                [_hook_row(store, hook) for hook in store.hooks],
            ),
            "<h2>Activation L2 norms per token</h2>",
            f"<p>{esc(_sample_text(store, units, sampled, num_sampled))}</p>",
            table(
                ["hook", "rows", "mean", "std", "min", *(f"p{q}" for q in PERCENTILES), "max"],
                [_stats_row(h) for h in hooks],
            ),
            '<div class="grid">',
            *(f'<div class="chart" id="norms-{i}"></div>' for i in range(len(hooks))),
            '<div class="chart" id="positions"></div>' if hooks and num_sampled else "",
            "</div>",
            "<h2>Fingerprint</h2>",
            "<details><summary>store.json fingerprint (what decides the store's bytes)</summary>"
            f"<pre>{esc(json.dumps(store.meta['fingerprint'], indent=1, sort_keys=True))}</pre>"
            "</details>",
        ]
    )
    return write_page(
        site,
        "index.html",
        page(
            f"Activation store: {store.root.name}",
            body,
            data,
            depth=0,
            on_load=ON_LOAD,
            nav=f"<span>activation store report</span><span>{esc(store.root)}</span>",
        ),
    )


def sample_units(units: list[int], rows_per_unit: int, max_rows: int) -> list[int]:
    """Evenly spaced units (first and last included) holding about `max_rows` rows; all
    of them when they hold fewer, one when a single unit is larger than `max_rows`."""
    if not units:
        return []
    count = max(1, min(len(units), max_rows // rows_per_unit))
    picks = np.linspace(0, len(units) - 1, count).round().astype(np.int64)
    return [units[i] for i in picks]  # spacing >= 1, so rounding keeps them distinct


def token_norms(store: ActivationStore, hook: str, start: int, stop: int) -> np.ndarray:
    """float64 L2 norm of each row in [start, stop), read READ_ROWS rows at a time."""
    parts = []
    for first in range(start, stop, READ_ROWS):
        acts_ND = store.read(hook, slice(first, min(first + READ_ROWS, stop)))
        parts.append(np.sqrt(np.einsum("nd,nd->n", acts_ND, acts_ND, dtype=np.float64)))
    return np.concatenate(parts) if parts else np.zeros(0)


def norm_histogram(norms: np.ndarray) -> dict[str, Any]:
    """NUM_BINS bins from the smallest to the largest norm: log-spaced (`log` true) when
    they span more than LOG_BINS_ABOVE_RATIO, else equal width. Edges in norm units."""
    low, high = float(norms.min()), float(norms.max())
    log = low > 0 and high / low > LOG_BINS_ABOVE_RATIO
    edges = np.geomspace(low, high, NUM_BINS + 1) if log else np.linspace(low, high, NUM_BINS + 1)
    counts, _ = np.histogram(norms, bins=edges)
    return {"log": bool(log), "edges": edges.tolist(), "counts": counts.tolist()}


def _positions(store: ActivationStore, spans: list[tuple[int, int]]) -> np.ndarray:
    """Each sampled row's position in its window (the token table, one column)."""
    parts = [
        store.index.read_rows(start, stop, columns=["position"])["position"].to_numpy()
        for start, stop in spans
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _hook_data(
    store: ActivationStore, hook: str, spans: list[tuple[int, int]], positions: np.ndarray
) -> dict[str, Any]:
    """The hook's norm histogram (edges, counts), statistics and mean norm per position."""
    norms = np.concatenate([token_norms(store, hook, a, b) for a, b in spans] or [np.zeros(0)])
    result: dict[str, Any] = {"hook": hook, "rows": int(norms.size), "log": False}
    if norms.size == 0:
        return result | {"edges": [], "counts": [], "stats": {}, "position": [], "by_position": []}
    low, high = float(norms.min()), float(norms.max())
    per_position = np.bincount(positions, weights=norms)
    seen = np.bincount(positions)
    at = np.flatnonzero(seen)
    stats = {"mean": float(norms.mean()), "std": float(norms.std()), "min": low, "max": high}
    quantiles = np.percentile(norms, PERCENTILES)
    stats |= {f"p{q}": float(v) for q, v in zip(PERCENTILES, quantiles, strict=True)}
    return (
        result
        | norm_histogram(norms)
        | {
            "stats": stats,
            "position": at.tolist(),
            "by_position": (per_position[at] / seen[at]).tolist(),
        }
    )


# --- page text ---------------------------------------------------------------------------


def _state(store: ActivationStore, units: list[int]) -> str:
    if store.finished or len(units) == store.num_units:
        return '<p class="muted">Finished: every unit committed.</p>'
    return (
        f'<p class="error">Unfinished: {len(units)} of {store.num_units} units committed. '
        "This report reads only the committed units (partial); the others hold no data yet. "
        f"Finish the capture with: <code>{esc(store.meta.get('command') or 'the same command')}"
        "</code></p>"
    )


def _about(store: ActivationStore) -> list[list[Any]]:
    meta, fingerprint = store.meta, store.meta["fingerprint"]
    plan = meta.get("plan", {})
    return [
        ["path", store.root],
        ["model", fingerprint.get("model")],
        ["model weights sha256", fingerprint.get("model_weights_sha256")],
        ["model dtype", fingerprint.get("model_dtype") or "as saved"],
        [
            "tokenizer",
            f"{fingerprint.get('tokenizer')} ({fingerprint.get('tokenizer_vocab_size')} ids)",
        ],
        ["corpus", f"{fingerprint.get('corpus')} ({fingerprint.get('corpus_fingerprint')})"],
        ["documents", plan.get("num_documents")],
        ["rows (tokens stored)", meta["num_rows"]],
        [
            "windows, context length, mode",
            f"{meta['num_windows']}, {fingerprint.get('context_length')}, {fingerprint.get('mode')}",
        ],
        ["units, rows per unit", f"{meta['num_units']}, {meta['rows_per_unit']}"],
        ["cut by max_tokens", plan.get("truncated_by_max_tokens")],
        ["activation dtype", meta["dtype"]],
        ["capture command", meta.get("command") or "not recorded"],
        ["created, pipeline version", f"{meta.get('created_at')}, {meta.get('pipeline_version')}"],
        ["plan fingerprint", meta.get("plan_fingerprint")],
    ]


def _hook_row(store: ActivationStore, hook: str) -> list[Any]:
    info = store.meta["hooks"][hook]
    resolved = store.meta["fingerprint"].get("hooks_resolved", {}).get(hook, "")
    itemsize = np.dtype(info["stored_dtype"]).itemsize
    return [
        hook,
        resolved,
        info["d"],
        f"{info['logical_dtype']} / {info['stored_dtype']}",
        f"{store.num_rows * info['d'] * itemsize:,}",
    ]


def _sample_text(store: ActivationStore, units: list[int], sampled: list[int], rows: int) -> str:
    if not sampled:
        return "The store has no rows with data: no statistics."
    which = "all of them" if len(sampled) == len(units) else "evenly spaced: " + _unit_list(sampled)
    return (
        f"Statistics from {rows:,} of {store.num_rows:,} rows "
        f"({len(sampled):,} of {len(units):,} units with data, {which})."
    )


def _unit_list(units: list[int], shown: int = 8) -> str:
    head = ", ".join(map(str, units[:shown]))
    return f"units {head}" + (f", ... {units[-1]}" if len(units) > shown else "")


def _stats_row(hook: dict) -> list[str]:
    stats = hook["stats"]
    names = ["mean", "std", "min", *(f"p{q}" for q in PERCENTILES), "max"]
    return [hook["hook"], f"{hook['rows']:,}", *(number(stats.get(n)) for n in names)]


ON_LOAD = """
DATA.hooks.forEach((h, i) => {
  if (h.counts.length) histogramChart("norms-" + i, h.edges, h.counts, h.hook +
    ": L2 norm per token (" + h.rows.toLocaleString("en") + " rows)",
    h.log ? "L2 norm (log scale)" : "L2 norm", "tokens", { logX: h.log });
});
seriesChart("positions", DATA.hooks.map((h) => ({ name: h.hook, x: h.position, y: h.by_position })),
  "Mean L2 norm by position in the window", "position", "mean L2 norm");
"""
