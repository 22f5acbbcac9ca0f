"""The report page of one intervention output (`python -m jobs.intervene`): `index.html`.

What it reads, and why only that much:
- `intervention.json` (the fingerprint: steps, store and model identity, measured layers,
  trackers) and `summary.json` / `summary.parquet` (one row per stage): summary-sized, read
  whole. The per-stage charts (KL, loss, top-1, per-layer change, tracked latents) come
  from the summary, so they show exactly the numbers `jobs.intervene` printed.
- `effects/`: one row per token and stage, so at corpus scale it cannot be loaded. It is
  aggregated by one streaming pyarrow (Acero) scan of a few columns, grouped by stage and
  position (means per position) and by stage and log-spaced bin (a histogram): memory is
  bounded by the number of groups, never by the number of tokens.

An output without `_SUCCESS` is refused, as `jobs.inspect` refuses it: its summary does not
exist yet, and its effects cover only the committed units.

The output does not record where the store lies (only its plan fingerprint, so that a
moved store is still the same store); pass `store=` to name it and show its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline.file_formats import read_json
from pipeline.interventions.commits import EFFECTS_DIR
from pipeline.interventions.prepare import SPEC_JSON, SUMMARY_JSON, SUMMARY_PARQUET
from pipeline.report.site import esc, number, page, table, write_page
from pipeline.store.layout import STORE_JSON, SUCCESS
from pipeline.store.location import (
    parquet_batches,
    parquet_file,
    parquet_files,
    read_table,
    store_path,
)
from pipeline.store.manifest import committed_units

# Per-position means drawn from the effects (whichever the output has: causal LMs
# record kl/top1_agree/loss, encoders output_cos/output_change).
PROFILE_COLUMNS = ("kl", "top1_agree", "loss_change", "output_cos", "output_change")
# The histogram's bins: 4 per decade from 1e-8 (0 and anything smaller fall in the first
# bin) to 1e2 (anything larger falls in the last).
BINS_PER_DECADE = 4
LOG10_LOW, LOG10_HIGH = -8, 2


def is_intervention_output(path: Path) -> bool:
    """A folder written by `jobs.intervene` (finished or not): it has `intervention.json`."""
    return (store_path(path) / SPEC_JSON).is_file()


def check_finished(out: Path) -> None:
    """Refuse a folder that is not a finished intervention output, saying how to finish it."""
    if not is_intervention_output(out):
        raise ValueError(f"{out} is not an intervention output (it has no {SPEC_JSON})")
    if not (out / SUCCESS).is_file():
        raise ValueError(
            f"the intervention output {out} is unfinished: {len(committed_units(out))} units "
            f"committed and no {SUCCESS}. Finish it by running the same `python -m jobs.intervene "
            "--spec ...` command again (it resumes; committed units are kept), then report it"
        )


def write_intervention_report(run_dir: Path, site: Path, store: Path | None = None) -> Path:
    """Write `site/index.html` for the finished intervention output `run_dir`; return its path.

    `store`: the store the run replayed, if known (checked against the recorded fingerprint),
    to name it and its model on the page. ValueError for an unfinished or foreign folder.
    """
    out = store_path(run_dir)
    check_finished(out)
    spec = read_json(out / SPEC_JSON, "intervention fingerprint")
    summary = read_json(out / SUMMARY_JSON, "intervention summary")
    stages = read_table(out / SUMMARY_PARQUET).to_pylist()  # one row per stage
    fingerprint = spec["fingerprint"]
    data = {
        "stages": [f"{row['stage']}: {row['steps']}" for row in stages],
        "means": _stage_means(stages),
        "layers": list(fingerprint["measure"]),
        "tracked": _tracked(fingerprint, stages),
        **effects_aggregates(out / EFFECTS_DIR),
    }
    body = "\n".join(
        [
            "<h2>Provenance</h2>",
            table(["field", "value"], _provenance(out, spec, summary, store), cls="kv"),
            "<h2>Steps</h2>",
            table(["#", "name", "layer", "operation", "positions"], _steps(fingerprint)),
            "<h2>Per stage</h2>",
            '<p class="muted">Stage s applies the first s steps (cumulative) or all of them. '
            "Means over every token of the run (loss: over tokens with a next token).</p>",
            '<div class="grid">',
            *(f'<div class="chart" id="{name}"></div>' for name in _chart_ids(data)),
            "</div>",
            "<h2>Summary table</h2>",
            '<div style="overflow-x: auto">',
            table(list(stages[0]) if stages else [], _summary_rows(stages)),
            "</div>",
            f'<p class="muted">From {esc(out / SUMMARY_PARQUET)}; per-token effects: '
            f"<code>pandas.read_parquet('{esc(out / EFFECTS_DIR)}')</code>.</p>",
        ]
    )
    return write_page(
        site,
        "index.html",
        page(
            f"Interventions: {out.name}",
            body,
            data,
            depth=0,
            on_load=ON_LOAD,
            nav=f"<span>intervention report</span><span>{esc(out)}</span>",
        ),
    )


def _stage_means(stages: list[dict]) -> dict[str, list]:
    """{column: per-stage mean} for every `mean_*` column of the summary."""
    names = [c for c in (stages[0] if stages else {}) if c.startswith("mean_")]
    return {name.removeprefix("mean_"): [row[name] for row in stages] for name in names}


def _tracked(fingerprint: dict, stages: list[dict]) -> dict[str, Any]:
    """Tracked SAE latents: labels, baseline means (the same for every stage) and per stage."""
    labels, base, by_stage = [], [], [[] for _ in stages]
    for tracker in fingerprint.get("track", []):
        for latent in tracker["latents"]:
            column = f"mean_{tracker['name']}_{latent}"
            if stages and column in stages[0]:
                labels.append(f"{tracker['name']} #{latent}")
                base.append(stages[0][f"{column}_base"])
                for values, row in zip(by_stage, stages, strict=True):
                    values.append(row[column])
    return {"labels": labels, "base": base, "stages": by_stage}


def effects_aggregates(effects_dir: Path) -> dict[str, Any]:
    """Per-position means and a log-binned histogram of the main effect, per stage.

    One streaming scan each over a few columns of the effects files (hidden temps
    skipped; local or on s3://, a row group at a time); what is held is sized by
    stages x positions and stages x bins.
    """
    names = set(parquet_file(parquet_files(effects_dir)[0]).schema_arrow.names)
    read = ["stage", "position"]
    exprs: dict[str, pc.Expression] = {"stage": pc.field("stage"), "position": pc.field("position")}
    for column in PROFILE_COLUMNS:
        if column == "loss_change" and {"loss", "loss_base"} <= names:
            change = pc.subtract(_float("loss"), _float("loss_base"))  # NaN: no next token
            exprs[column] = pc.if_else(pc.is_nan(change), pa.scalar(None, pa.float64()), change)
            read += ["loss", "loss_base"]
        elif column in names:
            exprs[column] = _float(column)
            read.append(column)
    measured = list(exprs)[2:]
    aggregates = [(c, "hash_mean", None, c) for c in measured]
    aggregates.append(("position", "hash_count", pc.CountOptions("all"), "tokens"))
    profile = _aggregate(effects_dir, read, exprs, aggregates, ["stage", "position"])
    column = next((c for c in ("kl", "output_change") if c in names), None)
    return {
        "profile": {
            "columns": measured,
            "stages": _split_by_stage(profile, ["position", "tokens", *measured]),
        },
        "histogram": None if column is None else _histogram(effects_dir, column),
    }


def _histogram(effects_dir: Path, column: str) -> dict[str, Any]:
    """Counts per stage in bins of log10(value), BINS_PER_DECADE a decade, from LOG10_LOW
    (smaller values, zeros included, count in the first bin) to LOG10_HIGH (larger: last)."""
    floor_value = pa.scalar(10.0**LOG10_LOW)
    bins = list(range(LOG10_LOW * BINS_PER_DECADE, LOG10_HIGH * BINS_PER_DECADE))
    scaled = pc.multiply(
        pc.log10(pc.max_element_wise(_float(column), floor_value)), BINS_PER_DECADE
    )
    bin_expr = pc.min_element_wise(
        pc.floor(scaled).cast(pa.int32()), pa.scalar(bins[-1], pa.int32())
    )
    counts = _aggregate(
        effects_dir,
        ["stage", column],
        {"stage": pc.field("stage"), "bin": bin_expr},
        [("bin", "hash_count", pc.CountOptions("all"), "count")],
        ["stage", "bin"],
    )
    per_stage: dict[int, list[int]] = {}
    rows = zip(*(counts[c].to_pylist() for c in ("stage", "bin", "count")), strict=True)
    for stage, bin_, count in rows:
        per_stage.setdefault(stage, [0] * len(bins))[bin_ - bins[0]] = count
    counts_by_stage = [per_stage[s] for s in sorted(per_stage)]
    used = [i for i in range(len(bins)) if any(c[i] for c in counts_by_stage)] or [0]
    keep = slice(used[0], used[-1] + 1)  # empty bins at either end are not drawn
    return {
        "column": column,
        "log10_low": [b / BINS_PER_DECADE for b in bins][keep],
        "log10_center": [(b + 0.5) / BINS_PER_DECADE for b in bins][keep],
        "counts": [c[keep] for c in counts_by_stage],
    }


def _float(column: str) -> pc.Expression:
    return pc.field(column).cast(pa.float64())


def _aggregate(
    effects_dir: Path, read: list[str], exprs: dict, aggregates: list, keys: list[str]
) -> pa.Table:
    """scan(read) -> project(exprs) -> group by keys, streamed: only the groups are held."""
    dataset = pads.dataset(parquet_batches(effects_dir, read))  # one pass, row groups
    plan = ac.Declaration.from_sequence(
        [
            ac.Declaration("scan", ac.ScanNodeOptions(dataset, columns=read)),
            ac.Declaration("project", ac.ProjectNodeOptions(list(exprs.values()), list(exprs))),
            ac.Declaration("aggregate", ac.AggregateNodeOptions(aggregates, keys=keys)),
        ]
    )
    return plan.to_table().sort_by([(k, "ascending") for k in keys])


def _split_by_stage(grouped: pa.Table, columns: list[str]) -> list[dict[str, list]]:
    """Per stage (in order), {column: values}: a few hundred numbers each."""
    stages = grouped["stage"].to_pylist()
    result = []
    for stage in sorted(set(stages)):
        part = grouped.filter(pc.equal(grouped["stage"], stage))
        result.append({c: part[c].to_pylist() for c in columns})
    return result


# --- page text ---------------------------------------------------------------------------


def _provenance(out: Path, spec: dict, summary: dict, store: Path | None) -> list[list[Any]]:
    fingerprint = spec["fingerprint"]
    rows: list[list[Any]] = [
        ["output", out],
        [
            "format version, pipeline version",
            f"{spec['format_version']}, {spec['pipeline_version']}",
        ],
        ["store plan fingerprint", fingerprint["store_fingerprint"]],
    ]
    rows += _store_rows(store, fingerprint)
    rows += [
        ["model weights sha256", fingerprint["model_weights_sha256"]],
        ["model dtype", fingerprint.get("model_dtype") or "as saved"],
        ["units replayed", summary["units"]],
        ["measured layers", ", ".join(fingerprint["measure"])],
        [
            "tracked latents",
            "; ".join(
                f"{t['name']}: {t['layer']} latents {t['latents']} ({t['sae']})"
                for t in fingerprint.get("track", [])
            )
            or "none",
        ],
        ["cumulative stages", fingerprint["cumulative"]],
        [
            "batch size, max units, device",
            f"{fingerprint['batch_size']}, {fingerprint['max_units']}, {fingerprint['device']}",
        ],
        [
            "replay check, max |baseline - store|",
            ", ".join(f"{k} {number(v)}" for k, v in summary["replay_max_abs_error"].items())
            or "no measured layer is in the store",
        ],
    ]
    rows += [[f"file {path}", f"sha256 {value}"] for path, value in fingerprint["files"].items()]
    return rows


def _store_rows(store: Path | None, fingerprint: dict) -> list[list[Any]]:
    """The store's path and model when the caller named the store and it is the same one."""
    if store is None:
        return [["store path", "not recorded in the output (pass store= to name it)"]]
    meta = read_json(store_path(store) / STORE_JSON, "store metadata")
    if meta["plan_fingerprint"] != fingerprint["store_fingerprint"]:
        raise ValueError(
            f"the store {store} is not the one this output replayed: its plan fingerprint "
            f"{meta['plan_fingerprint'][:12]}... differs from the recorded "
            f"{fingerprint['store_fingerprint'][:12]}..."
        )
    return [
        ["store path", store],
        ["model", meta["fingerprint"].get("model")],
        ["corpus", meta["fingerprint"].get("corpus")],
        [
            "store rows, context length",
            f"{meta['num_rows']}, {meta['fingerprint']['context_length']}",
        ],
    ]


def _steps(fingerprint: dict) -> list[list[Any]]:
    return [
        [
            index + 1,
            step["name"],
            step["layer"],
            _step_text(step),
            "all" if step["positions"] is None else ", ".join(map(str, step["positions"])),
        ]
        for index, step in enumerate(fingerprint["steps"])
    ]


def _step_text(step: dict) -> str:
    """One line for a step, from the fields its operation uses (spec.Step)."""
    operation = step["operation"]
    if operation == "scale":
        return f"scale x {number(step['factor'])}"
    if operation == "ablate":
        return f"ablate ({step['ablate']})"
    if operation == "sae":
        edits = ", ".join(
            f"{latent}: {how} {number(value)}" for latent, how, value in step["concepts"]
        )
        splice = "splice, " if step["splice"] else ""
        return f"sae {step['sae']}: {splice}concepts {{{edits}}}"
    direction = step["direction"] or {}
    named = (
        f"{direction['sae']} latent {direction['latent']}"
        if direction.get("sae")
        else f"{direction.get('vector')} key {direction.get('key')}"
    )
    if operation == "add":
        return f"add {number(step['coefficient'])} x ({named})"
    return f"{operation} ({named})"


def _summary_rows(stages: list[dict]) -> list[list[str]]:
    return [[number(v) for v in row.values()] for row in stages]


def _chart_ids(data: dict) -> list[str]:
    """The chart boxes the page has, in order; ON_LOAD draws each one it finds."""
    means = data["means"]
    ids = [c for c in ("kl", "output_cos") if c in means]
    ids += ["loss"] if "loss" in means else []
    ids += ["top1"] if "top1_agree" in means else []
    ids += ["layers"] if data["layers"] else []
    ids += ["tracked"] if data["tracked"]["labels"] else []
    ids += ["profile"] if data["profile"]["columns"] else []
    ids += ["histogram"] if data["histogram"] else []
    return ids


# Several values per stage are drawn as lines over the stages (the helpers' bars of
# several series overlap rather than stand side by side).
ON_LOAD = """
const d = DATA, m = d.means, stages = d.stages;
const over = (name, x, y) => ({ name: name, x: x, y: y });
if (m.kl) barChart("kl", stages, m.kl, "KL(baseline || intervened), mean per token",
  "stage", "nats");
if (m.output_cos) seriesChart("output_cos", [over("cosine", stages, m.output_cos),
  over("relative change", stages, m.output_change)], "Final hidden state vs baseline",
  "stage", "mean");
if (m.loss) seriesChart("loss", [over("clean (baseline)", stages, m.loss_base),
  over("intervened", stages, m.loss)], "Next-token loss, clean vs intervened", "stage", "nats");
if (m.top1_agree) seriesChart("top1", [over("agree", stages, m.top1_agree),
  over("changed", stages, m.top1_agree.map((v) => (v === null ? null : 1 - v)))],
  "Top-1 next token vs baseline", "stage", "fraction of tokens");
if (d.layers.length) seriesChart("layers", stages.map((s, i) => over(s, d.layers,
  d.layers.map((l) => (m["change_" + l] || [])[i] ?? null))),
  "Relative change ||x' - x|| / ||x|| per measured layer", "layer", "mean");
const t = d.tracked, withBase = ["0: baseline", ...stages];
if (t.labels.length) seriesChart("tracked", t.labels.map((label, k) => over(label, withBase,
  [t.base[k], ...t.stages.map((values) => values[k])])),
  "Tracked SAE latents, mean activation", "stage", "mean");
const p = d.profile;
if (p.columns.length) seriesChart("profile", p.stages.map((s, i) => over(stages[i],
  s.position, s[p.columns[0]])), "Mean " + p.columns[0] + " by position in the window",
  "position", p.columns[0]);
const h = d.histogram;
if (h) seriesChart("histogram", h.counts.map((c, i) => over(stages[i], h.log10_center, c)),
  "Tokens per bin of " + h.column + " (first bin: also smaller values)",
  "log10 " + h.column + " (bin centre)", "tokens");
"""
