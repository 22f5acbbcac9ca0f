"""One entry for every report: decide what the input is, claim the site folder, write it.

The site folder belongs to the report alone (its `index.html`, `latents/`, `assets/`):
a folder holding anything else is refused, and `overwrite` removes only those entries,
like every other job's output (pipeline/store/output_dir.py).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.report.site import write_assets
from pipeline.store.output_dir import OutputFolderError, claim_output_dir

REPORT_OUTPUTS = ("index.html", "latents", "assets")
KINDS = ("features", "interventions", "store")


def report_kind(source: Path) -> str:
    """'features', 'interventions' or 'store', from the files `source` holds."""
    from pipeline.report.feature_pages import is_stats_output
    from pipeline.report.interventions import is_intervention_output
    from pipeline.report.store_pages import is_store

    if not source.is_dir():
        raise ValueError(
            f"{source} is not a folder; give a sae_stats output, an intervention output or a store"
        )
    if is_stats_output(source):
        return "features"
    if is_intervention_output(source):
        return "interventions"
    if is_store(source):
        return "store"
    raise ValueError(
        f"{source} is none of what a report draws: a `jobs.sae_stats` output (features.parquet "
        "and stats.json), a `jobs.intervene` output, or an activation store (store.json)"
    )


def check_source(source: Path, kind: str, partial: bool) -> None:
    """Refuse an unfinished intervention output or store before anything is written."""
    if kind == "interventions":
        from pipeline.report.interventions import check_finished

        check_finished(source)
    elif kind == "store":
        from pipeline.store.reader import ActivationStore

        ActivationStore.open(source, partial).data_units()  # UnfinishedStoreError


def write_report(
    source: str | Path,
    site: str | Path,
    eval_dir: str | Path | None = None,
    overwrite: bool = False,
    partial: bool = False,
) -> tuple[str, Path]:
    """(the kind of report, its index.html). Everything is checked before a page is written.

    `partial`: report the committed units of an unfinished store (the page says so).
    """
    source, site = Path(source), Path(site)
    kind = report_kind(source)
    if eval_dir is not None and kind != "features":
        raise ValueError("--eval adds SAE metrics to a feature report; the input is a " + kind)
    if partial and kind != "store":
        raise ValueError("--partial reports the committed units of a store; the input is a " + kind)
    check_source(source, kind, partial)
    if site.resolve() == source.resolve() or source.resolve() in site.resolve().parents:
        raise OutputFolderError(
            f"report: the site {site} would be written inside its input {source}; "
            "give it a folder of its own (--out)"
        )
    if claim_output_dir(site, REPORT_OUTPUTS, "report", overwrite):
        raise OutputFolderError(
            f"report: {site} already holds a report; pass --overwrite to replace it, or "
            "choose another --out"
        )
    site.mkdir(parents=True, exist_ok=True)
    write_assets(site)
    if kind == "features":
        from pipeline.report.feature_pages import write_features_report

        index = write_features_report(source, site, Path(eval_dir) if eval_dir else None)
    elif kind == "interventions":
        from pipeline.report.interventions import write_intervention_report

        index = write_intervention_report(source, site)
    else:
        from pipeline.report.store_pages import write_store_report

        index = write_store_report(source, site, partial=partial)
    return kind, index
