"""A human summary of a store, for `python -m jobs.inspect STORE`.

Kept here rather than in jobs/ so the entry point stays a thin argument parser.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.store.reader import ActivationStore
from pipeline.store.verify import StoreVerificationError

_SKIP_KEYS = ("hooks", "dtype")


def describe_store(
    path: str | os.PathLike, num_token_rows: int = 5, check_data: bool = True
) -> tuple[str, bool]:
    """Everything a person wants to know before opening a store, as printable text.

    Returns (text, verified): verified is False when the store is incomplete or damaged.
    """
    store = ActivationStore.open(path)
    meta, plan = store.meta, store.meta["plan"]
    lines = [
        f"store {store.root}",
        f"  format {meta['format_version']}, written by pipeline {meta['pipeline_version']}, created {meta['created_at']}",
    ]
    lines.append("fingerprint (what decides the bytes):")
    for key, value in meta["fingerprint"].items():
        if key not in _SKIP_KEYS:
            lines.append(f"  {key}: {_short(value)}")
    lines.append("hooks:")
    for hook in store.hooks:
        info = meta["hooks"][hook]
        lines.append(
            f"  {hook}: d={info['d']} dtype={info['logical_dtype']} "
            f"(stored {info['stored_dtype']}, {info['array']})"
        )
    lines.append(
        f"rows: {store.num_rows} in {meta['num_windows']} windows; documents: "
        f"{plan['num_documents']} ({plan['num_skipped_empty']} empty skipped, "
        f"{plan['num_replaced_chars']} invalid UTF-8 chars replaced)"
        + ("; cut by max_tokens" if plan["truncated_by_max_tokens"] else "")
    )
    lines.append(
        f"plan: {len(meta['parts'])} parts (token and docs files) from "
        f"{plan['num_shards']} corpus shards"
    )
    pending = store.pending_units()
    lines.append(
        f"units: {store.num_units - len(pending)}/{store.num_units} committed"
        + (f", pending {_short(pending)}" if pending else "")
        + f" ({store.rows_per_unit} rows each)"
    )
    if pending:
        command = meta.get("command") or "its capture command again, with the same config and --out"
        lines.append(
            f"unfinished: readers refuse its activations until every unit is committed; "
            f"finish it with: {command}"
        )
    verified, verdict = _verify(store, check_data)
    lines.append(f"verify: {verdict}")
    if num_token_rows > 0 and store.committed_units():
        first = min(store.committed_units()) * store.rows_per_unit
        rows = slice(first, min(first + num_token_rows, store.num_rows))
        lines.append(f"token rows {rows.start}..{rows.stop - 1}:")
        table = store.tokens(rows).to_pandas().to_string(index=False)
        lines.extend("  " + line for line in table.splitlines())
    hook = store.hooks[0]
    lines += [
        "open it without this package:",
        f'  pandas.read_parquet("{store.root}/tokens")            # one row per token',
        f'  zarr.open_group("{store.root}/activations.zarr", mode="r")["{hook}"][:10]',
        f'  xarray.open_zarr("{store.root}/activations.zarr")     # rows x features per hook',
    ]
    return "\n".join(lines), verified


def _verify(store: ActivationStore, check_data: bool) -> tuple[bool, str]:
    try:
        summary = store.verify(check_data=check_data)
    except StoreVerificationError as e:
        shown = "; ".join(e.problems[:5]) + (" ..." if len(e.problems) > 5 else "")
        return False, f"FAILED ({len(e.problems)} problems): {shown}"
    checked = f", {summary['bytes_checked']} bytes checksummed" if check_data else ", data not read"
    return True, f"OK{checked}"


def _short(value: Any, limit: int = 100) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
