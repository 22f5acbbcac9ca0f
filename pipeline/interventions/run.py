"""Run an intervention spec in this process, and write the summary of any finished run.

`run_interventions(spec)` prepares, replays every pending unit with one worker, and
finishes; the Ray driver (`pipeline.distributed.interventions`) shares `prepare_run` and
`finish_run`, so both write the same files. Both take `verify`: a rerun then checks the
committed effects files' sha256, not only their sizes, before trusting them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.interventions.prepare import (
    SPEC_JSON,
    SUMMARY_JSON,
    SUMMARY_PARQUET,
    PreparedRun,
    prepare_run,
)
from pipeline.interventions.spec import InterventionSpec
from pipeline.store.atomic import write_atomic
from pipeline.store.layout import SUCCESS, record_file
from pipeline.store.location import store_path
from pipeline.store.meta import write_json_atomic


@dataclass(frozen=True)
class InterventionResult:
    """out: the output folder. units_computed: units replayed by this run (pending ones
    and damaged ones). units_damaged: committed units whose record or effects file failed
    the rerun's checks and were recomputed; `damaged` says why, per unit."""

    out: Path
    units_computed: int
    summary: pd.DataFrame  # one row per stage
    units_damaged: int = 0
    damaged: dict[int, str] = field(default_factory=dict)


def run_interventions(
    spec: InterventionSpec, progress: bool = True, verify: bool = False
) -> InterventionResult:
    """Run `spec` here. `verify`: check committed effects files' sha256 before trusting them."""
    from pipeline.interventions.worker import InterventionWorker

    run = prepare_run(spec, verify=verify)
    with InterventionWorker(run) as worker:
        for index, unit in enumerate(run.pending, start=1):
            worker.process(unit)
            if progress:
                print(f"unit {unit} done ({index}/{len(run.pending)})", flush=True)
    return finish_run(run)


def finish_run(run: PreparedRun) -> InterventionResult:
    """Merge the units' sums into `summary.json` / `summary.parquet` and mark `_SUCCESS`."""
    out = store_path(run.out)
    records = [
        json.loads(record_file(out, unit, run.unit_name_width).read_text()) for unit in run.units
    ]
    totals: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for stage, columns in record["sums"].items():
            stage_totals = totals.setdefault(stage, {})
            for name, (total, count) in columns.items():
                old_total, old_count = stage_totals.get(name, [0.0, 0])
                stage_totals[name] = [old_total + total, old_count + count]
    rows = []
    for stage_index, name in enumerate(run.spec.stage_names, start=1):
        columns = totals.get(str(stage_index), {})
        row = {"stage": stage_index, "steps": name}
        counted = columns.get("kl") or columns.get("output_cos") or [0.0, 0]
        row["tokens"] = int(counted[1])
        for column, (total, count) in columns.items():
            row[f"mean_{column}"] = total / count if count else float("nan")
        if "loss" in columns and "loss_base" in columns:
            row["mean_loss_change"] = row["mean_loss"] - row["mean_loss_base"]
        rows.append(row)
    summary = pd.DataFrame(rows)
    sink = io.BytesIO()
    summary.to_parquet(sink, index=False)
    write_atomic(out / SUMMARY_PARQUET, [sink.getvalue()])
    write_json_atomic(
        out / SUMMARY_JSON,
        {
            "spec": str(out / SPEC_JSON),
            "units": len(records),
            "replay_max_abs_error": _replay_errors(records),
            "stages": json.loads(summary.to_json(orient="records")),
        },
    )
    write_json_atomic(out / SUCCESS, {"units": len(records)})  # last, and whole or absent
    return InterventionResult(
        out=out,
        units_computed=len(run.pending),
        summary=summary,
        units_damaged=len(run.damaged),
        damaged=dict(run.damaged),
    )


def _replay_errors(records: list[dict]) -> dict[str, float]:
    """Per measured store layer, the largest baseline-vs-store difference of any unit."""
    errors: dict[str, float] = {}
    for record in records:
        for layer, error in record.get("replay_max_abs_error", {}).items():
            errors[layer] = max(errors.get(layer, 0.0), error)
    return errors
