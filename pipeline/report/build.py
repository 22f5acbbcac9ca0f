"""One entry for every report: decide what the input is, claim the site folder, write it.

The site folder belongs to the report alone (its `index.html`, `latents/`, `assets/`):
a folder holding anything else is refused, and `overwrite` removes only those entries,
like every other job's output (pipeline/store/output_dir.py).

The input may be on s3:// (read in place: Parquet row groups, the store's sampled
units). A site on s3:// is written into a local temporary folder and uploaded, one
object per file, `index.html` last: a prefix with an `index.html` is a whole site (and
S3 static website hosting, or any bucket browser, serves it as it is).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.report.site import write_assets
from pipeline.store.location import (
    is_url,
    make_folder,
    require_bucket,
    resolve,
    store_path,
    upload_folder,
)
from pipeline.store.output_dir import OutputFolderError, claim_output_dir

REPORT_OUTPUTS = ("index.html", "latents", "assets")
KINDS = ("features", "interventions", "store")


def report_kind(source: Path) -> str:
    """'features', 'interventions' or 'store', from the files `source` holds."""
    from pipeline.report.feature_pages import is_stats_output
    from pipeline.report.interventions import is_intervention_output
    from pipeline.report.store_pages import is_store

    if not source.is_dir():  # on s3://: a prefix with objects under it
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
    source, site = store_path(source), store_path(site)
    kind = report_kind(source)
    if eval_dir is not None and kind != "features":
        raise ValueError("--eval adds SAE metrics to a feature report; the input is a " + kind)
    if partial and kind != "store":
        raise ValueError("--partial reports the committed units of a store; the input is a " + kind)
    check_source(source, kind, partial)
    if resolve(site) == resolve(source) or resolve(site).startswith(resolve(source) + "/"):
        raise OutputFolderError(
            f"report: the site {site} would be written inside its input {source}; "
            "give it a folder of its own (--out)"
        )
    require_bucket(site, "the report")
    if claim_output_dir(site, REPORT_OUTPUTS, "report", overwrite):
        raise OutputFolderError(
            f"report: {site} already holds a report; pass --overwrite to replace it, or "
            "choose another --out"
        )
    eval_dir = store_path(eval_dir) if eval_dir is not None else None
    if not is_url(site):
        make_folder(site)
        return kind, write_site(kind, source, site, eval_dir, partial)
    with tempfile.TemporaryDirectory(prefix="report-site-") as staging:
        index = write_site(kind, source, Path(staging), eval_dir, partial)
        upload_folder(Path(staging), site, last=index.name)
    return kind, site / index.name


def write_site(kind: str, source: Path, site: Path, eval_dir: Path | None, partial: bool) -> Path:
    """The pages and assets of one report into the local folder `site`; its index.html."""
    write_assets(site)
    if kind == "features":
        from pipeline.report.feature_pages import write_features_report

        return write_features_report(source, site, eval_dir)
    if kind == "interventions":
        from pipeline.report.interventions import write_intervention_report

        return write_intervention_report(source, site)
    from pipeline.report.store_pages import write_store_report

    return write_store_report(source, site, partial=partial)
