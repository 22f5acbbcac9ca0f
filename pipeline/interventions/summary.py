"""A text summary of an intervention output, for `python -m jobs.inspect OUT`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.interventions.prepare import SPEC_JSON, SUMMARY_JSON, SUMMARY_PARQUET
from pipeline.store.layout import SUCCESS
from pipeline.store.location import store_path
from pipeline.store.manifest import committed_units


def is_intervention_output(path: str | Path) -> bool:
    return (store_path(path) / SPEC_JSON).is_file()


def describe_interventions(path: str | Path) -> tuple[str, bool]:
    """(text, finished): the steps, progress, per-stage means and how to open the effects."""
    out = store_path(path)
    fingerprint = json.loads((out / SPEC_JSON).read_text())["fingerprint"]
    steps = ", ".join(
        f"{s['name']} ({s['operation']} at {s['layer']})" for s in fingerprint["steps"]
    )
    lines = [
        f"intervention output: {out}",
        f"  steps: {steps}",
        f"  measured layers: {', '.join(fingerprint['measure'])}",
    ]
    finished = (out / SUCCESS).exists()
    if not finished:
        lines.append(f"  unfinished: {len(committed_units(out))} units committed; rerun the job")
        return "\n".join(lines), False
    summary = json.loads((out / SUMMARY_JSON).read_text())
    lines.append(
        f"  {summary['units']} units; replay check (max |baseline - store|): "
        f"{summary['replay_max_abs_error']}"
    )
    lines.append("")
    lines.append(pd.read_parquet(str(out / SUMMARY_PARQUET)).to_string(index=False))
    lines += ["", "open the per-token effects with:", f"  pandas.read_parquet('{out}/effects')"]
    return "\n".join(lines), True
