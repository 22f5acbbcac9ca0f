"""The feature dashboard: a summary page and one page per latent, from `jobs.sae_stats` output.

Built for 16k-latent SAEs: the summary page holds only per-latent scalars it needs for
its charts (computed here into a few histograms, not shipped per latent), so it stays
small; each latent's examples, histogram and output tokens go in that latent's own page
(`latents/<id>.html`), and the examples table is read a block of latents at a time (it
is sorted by latent in small row groups), so memory holds one block, never the whole
table. Browsing is by list pages of `LIST_PAGE` latents and a jump box.

Sources: OUT/features.parquet, examples.parquet, stats.json and, when present,
logits.parquet (output tokens); an `eval_sae` output adds its metrics to the summary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.file_formats import read_json
from pipeline.report.site import esc, number, page, table, write_page
from pipeline.store.location import read_table

LIST_PAGE = 1000
LATENT_BLOCK = 1024
SAMPLE_GROUPS = 4
EVAL_FIELDS = (
    ("fve", "fraction of variance explained"),
    ("mse", "MSE per element"),
    ("l0", "L0 (mean latents firing per token)"),
    ("ce_loss_clean", "next-token loss, clean"),
    ("ce_loss_spliced", "next-token loss, SAE spliced"),
    ("ce_loss_zero", "next-token loss, layer zero-ablated"),
    ("ce_loss_recovered", "CE loss recovered"),
    ("kl_spliced", "KL(clean ‖ spliced) per token"),
    ("cos_spliced", "final hidden state cosine, spliced vs clean"),
)


def is_stats_output(path: Path) -> bool:
    return (path / "features.parquet").is_file() and (path / "stats.json").is_file()


def write_features_report(stats_dir: Path, site: Path, eval_dir: Path | None = None) -> Path:
    """site/index.html (summary), site/latents/<id>.html and site/latents/list-<k>.html."""
    if not is_stats_output(stats_dir):
        raise ValueError(
            f"{stats_dir} is not a `jobs.sae_stats` output (features.parquet and stats.json); "
            "run python -m jobs.sae_stats --out DIR first, then report DIR"
        )
    stats = read_json(stats_dir / "stats.json", "feature statistics")
    features = read_table(stats_dir / "features.parquet").to_pandas()
    evaluation = _read_eval(eval_dir)
    edges = np.asarray(stats["activation_bin_edges"])
    first_tokens = _first_token_texts(stats_dir / "examples.parquet")
    write_page(site, "index.html", summary_page(stats, features, evaluation, first_tokens))
    num_latents = len(features)
    for start in range(0, num_latents, LIST_PAGE):
        write_page(
            site,
            f"latents/list-{start // LIST_PAGE}.html",
            list_page(features.iloc[start : start + LIST_PAGE], first_tokens, start, num_latents),
        )
    logits = stats_dir / "logits.parquet"
    columns = {name: features[name].to_numpy() for name in features.columns}
    for lo in range(0, num_latents, LATENT_BLOCK):
        hi = min(lo + LATENT_BLOCK, num_latents)
        examples = _Block(stats_dir / "examples.parquet", lo, hi, EXAMPLE_COLUMNS)
        tokens = _Block(logits, lo, hi, LOGIT_COLUMNS) if logits.is_file() else None
        for latent in range(lo, hi):
            feature = {name: values[latent] for name, values in columns.items()}
            text = latent_page(
                feature,
                num_latents,
                edges,
                examples.rows(latent),
                tokens.rows(latent) if tokens is not None else None,
                stats.get("output_tokens", ""),
            )
            write_page(site, f"latents/{latent}.html", text)
    return site / "index.html"


# --- reading ---------------------------------------------------------------------------
def _read_eval(eval_dir: Path | None) -> dict[str, Any]:
    if eval_dir is None:
        return {}
    path = eval_dir / "eval.json"
    if not path.is_file():
        raise ValueError(f"{eval_dir} holds no eval.json; run python -m jobs.eval_sae --out DIR")
    return read_json(path, "SAE evaluation")


EXAMPLE_COLUMNS = (
    "latent", "kind", "activation", "doc_id", "position",
    "context_tokens", "context_activations", "context_index",
)  # fmt: skip
LOGIT_COLUMNS = ("latent", "direction", "rank", "token_text", "logit")


class _Block:
    """Rows of latents [lo, hi) of a table sorted by latent, as Python lists per column:
    one conversion per block, then each latent's rows are a slice (row groups outside
    the block are skipped by their statistics)."""

    def __init__(self, path: Path, lo: int, hi: int, columns: tuple[str, ...]):
        filters = [("latent", ">=", lo), ("latent", "<", hi)]
        table = read_table(path, columns=list(columns), filters=filters)
        table = table.sort_by("latent")  # stable: keeps (kind, rank) order within a latent
        self.columns = {name: table.column(name).to_pylist() for name in columns}
        self.starts = np.searchsorted(np.asarray(self.columns["latent"]), np.arange(lo, hi + 1))
        self.lo = lo

    def rows(self, latent: int) -> list[dict[str, Any]]:
        a, b = self.starts[latent - self.lo], self.starts[latent - self.lo + 1]
        return [{name: values[i] for name, values in self.columns.items()} for i in range(a, b)]


def _first_token_texts(examples_path: Path) -> dict[int, str]:
    """Each latent's strongest example's token text (for lists), one column read."""
    table = read_table(examples_path, columns=["latent", "kind", "rank", "token_text"])
    frame = table.to_pandas()
    first = frame[(frame.kind == "top") & (frame["rank"] == 0)]
    return dict(zip(first.latent.tolist(), first.token_text.tolist(), strict=True))


# --- the summary -------------------------------------------------------------------------
def summary_page(
    stats: dict[str, Any],
    features: pd.DataFrame,
    evaluation: dict[str, Any],
    first_tokens: dict[int, str],
) -> str:
    num_latents = len(features)
    fired = features.frequency.to_numpy()
    alive = fired[fired > 0]
    log_freq = np.log10(alive) if len(alive) else np.zeros(0)
    bins = np.arange(math.floor(log_freq.min() * 5) / 5, 0.2001, 0.2) if len(alive) else [0]
    counts, edges = np.histogram(log_freq, bins=bins) if len(alive) else ([], [0])
    l0 = stats.get("l0_histogram", [])
    facts = [
        ["store", stats.get("store")],
        ["hook", stats.get("hook")],
        ["SAE", stats.get("sae")],
        ["model", stats.get("model")],
        ["tokens", f"{stats['num_tokens']:,}"],
        ["latents", f"{num_latents:,}"],
        ["dead (never fired)", f"{stats['dead_count']:,}"],
        [f"dense (fired on > {stats['dense_frequency']:.0%} of tokens)", stats["dense_count"]],
        ["examples per latent", f"top {stats['top_k']} + {stats['samples']} sampled"],
    ]
    for key, value in (stats.get("sae_trained_on") or {}).items():
        facts.append([f"SAE trained on: {key}", value])
    metrics = ""
    if evaluation:
        rows = [[label, number(evaluation.get(key))] for key, label in EVAL_FIELDS]
        rows = [r for r in rows if r[1] != "n/a"]
        metrics = "<h2>Evaluation (jobs.eval_sae)</h2>" + table(["metric", "value"], rows, "kv")
    most = features.sort_values(["num_fired", "latent"], ascending=[False, True]).head(20)
    lists = " ".join(
        f'<a href="latents/list-{k}.html">{k * LIST_PAGE}–'
        f"{min((k + 1) * LIST_PAGE, num_latents) - 1}</a>"
        for k in range(math.ceil(num_latents / LIST_PAGE))
    )
    body = f"""
<h2>What this is</h2>
{table(["", ""], facts, "kv")}
{metrics}
<h2>Distributions</h2>
<div class="grid"><div id="freq" class="chart"></div><div id="l0" class="chart"></div></div>
<p class="muted">Firing frequency: latents that fired at least once, by log10 of the
fraction of tokens they fired on ({stats["dead_count"]} dead latents are not in it).</p>
<h2>Most frequent latents</h2>
{_latent_table(most, first_tokens, "latents/")}
<h2>All latents</h2><p>{lists}</p>
"""
    data = {
        "freq": {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]},
        "l0": {"x": list(range(len(l0))), "y": l0},
        "numLatents": num_latents,
    }
    on_load = (
        'histogramChart("freq", DATA.freq.edges, DATA.freq.counts, "Firing frequency", '
        '"log10(fraction of tokens)", "latents");'
        'barChart("l0", DATA.l0.x, DATA.l0.y, "L0: latents firing per token", '
        '"latents firing", "tokens");'
    )
    return page(
        f"SAE features: {stats.get('hook')}",
        body,
        data,
        depth=0,
        on_load=on_load,
        nav=_nav("", num_latents),
    )


def _latent_table(rows: pd.DataFrame, first_tokens: dict[int, str], prefix: str) -> str:
    cells = "".join(
        f'<tr><td><a href="{prefix}{r.latent}.html">{r.latent}</a></td>'
        f'<td class="num">{r.num_fired:,}</td><td class="num">{number(r.frequency, 3)}</td>'
        f'<td class="num">{number(r.max, 3)}</td>'
        f"<td>{esc(first_tokens.get(r.latent, ''))}</td></tr>"
        for r in rows.itertuples()
    )
    head = (
        '<tr><th>latent</th><th class="num">fired</th><th class="num">frequency</th>'
        '<th class="num">max</th><th>strongest token</th></tr>'
    )
    return f"<table><thead>{head}</thead><tbody>{cells}</tbody></table>"


def list_page(
    rows: pd.DataFrame, first_tokens: dict[int, str], start: int, num_latents: int
) -> str:
    stop = start + len(rows) - 1
    body = _latent_table(rows, first_tokens, "")
    return page(
        f"Latents {start}–{stop}",
        body,
        {"numLatents": num_latents},
        1,
        "",
        _nav("../", num_latents),
    )


# --- one latent --------------------------------------------------------------------------
def latent_page(
    feature: dict[str, Any],
    num_latents: int,
    edges: np.ndarray,
    examples: list[dict[str, Any]],
    tokens: list[dict[str, Any]] | None,
    tokens_note: str,
) -> str:
    """One latent's page: its numbers and histogram, top contexts, samples, output tokens."""
    latent, peak, fired = int(feature["latent"]), float(feature["max"]), int(feature["num_fired"])
    counts = np.asarray(feature["histogram"])
    used = np.nonzero(counts)[0]
    lo, hi = (used[0], used[-1] + 1) if len(used) else (0, 0)
    top = [_example(e) for e in examples if e["kind"] == "top"]
    samples = sorted(
        (_example(e) for e in examples if e["kind"] == "sample"), key=lambda e: -e["act"]
    )
    groups = np.array_split(np.arange(len(samples)), min(SAMPLE_GROUPS, len(samples)) or 1)
    sample_groups = [
        {
            "label": _group_label([samples[i]["act"] for i in g], k, len(groups)),
            "examples": [samples[i] for i in g],
        }
        for k, g in enumerate(groups)
        if len(g)
    ]
    facts = [
        ["fired on", f"{fired:,} tokens (frequency {number(float(feature['frequency']), 3)})"],
        ["activation when firing", f"mean {number(float(feature['mean_active']), 3)}, std "
         f"{number(float(feature['std_active']), 3)}, max {number(peak, 3)}"],
    ]  # fmt: skip
    body = f"""
{table(["", ""], facts, "kv")}
<div class="grid"><div id="hist" class="chart"></div><div>{_output_tokens(tokens, tokens_note)}</div></div>
<h2>Top activations</h2>
<p class="muted">Each token shaded by this latent's activation on it (relative to its
maximum, {number(peak, 3)}); the example token is outlined. Duplicated contexts are
listed once.</p>
<div id="top" class="contexts">{"" if top else '<p class="muted">never fired</p>'}</div>
<h2>Samples across its activations</h2>
<p class="muted">{len(samples)} firings sampled uniformly from all {fired:,}, split by
activation into groups, strongest first.</p>
<div id="samples"></div>
"""
    data = {
        "latent": latent,
        "numLatents": num_latents,
        "max": peak,
        "hist": {"edges": edges[lo : hi + 1].tolist(), "counts": counts[lo:hi].tolist()},
        "top": top,
        "samples": sample_groups,
    }
    nav = _nav("../", num_latents, latent)
    return page(f"Latent {latent}", body, data, depth=1, on_load=LATENT_ON_LOAD, nav=nav)


LATENT_ON_LOAD = """
histogramChart("hist", DATA.hist.edges, DATA.hist.counts, "Activation histogram (all firings)",
  "activation", "tokens", {logX: true});
renderContexts("top", DATA.top, DATA.max);
const box = document.getElementById("samples");
DATA.samples.forEach((group, k) => {
  const title = document.createElement("h3");
  title.textContent = group.label;
  box.appendChild(title);
  const list = document.createElement("div");
  list.className = "contexts";
  list.id = "samples-" + k;
  box.appendChild(list);
  renderContexts(list.id, group.examples, DATA.max);
});
"""


def _example(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "tokens": row["context_tokens"],
        "acts": [round(a, 4) for a in row["context_activations"]],
        "index": row["context_index"],
        "act": row["activation"],
        "doc": row["doc_id"],
        "pos": row["position"],
    }


def _group_label(activations: list[float], k: int, num_groups: int) -> str:
    share = f"{k * 100 // num_groups}–{(k + 1) * 100 // num_groups}%"
    return (
        f"{share} of the sample, strongest first: activations {max(activations):.3g} "
        f"down to {min(activations):.3g}"
    )


def _output_tokens(tokens: list[dict[str, Any]] | None, note: str) -> str:
    if not tokens:
        return f'<h2>Output tokens</h2><p class="muted">{esc(note or "not computed")}</p>'
    parts = []
    for direction in ("promoted", "suppressed"):
        rows = sorted((t for t in tokens if t["direction"] == direction), key=lambda t: t["rank"])
        cells = [[repr(t["token_text"]), f"{t['logit']:+.3f}"] for t in rows]
        parts.append(f"<div><b>{direction}</b>{table(['token', 'logit'], cells)}</div>")
    return (
        "<h2>Output tokens</h2>"
        f'<p class="muted">Its decoder direction through the unembedding: {esc(note)}</p>'
        f'<div style="display:flex;gap:16px">{"".join(parts)}</div>'
    )


def _nav(up: str, num_latents: int, latent: int | None = None) -> str:
    links = [
        f'<a href="{up}index.html">Summary</a>',
        f'<a href="{up}latents/list-0.html">All latents</a>',
    ]
    if latent is not None:
        if latent > 0:
            links.append(f'<a href="{latent - 1}.html">← {latent - 1}</a>')
        if latent + 1 < num_latents:
            links.append(f'<a href="{latent + 1}.html">{latent + 1} →</a>')
    form = (
        f"<form onsubmit=\"return jumpTo(this, '{up}latents/', {num_latents})\">"
        '<label>latent <input name="latent" inputmode="numeric" placeholder="id"></label> '
        '<button>go</button><span class="jump-note"></span></form>'
    )
    return " ".join(links) + form
