"""Output folders: a job writes, and deletes, only the entries it owns.

Every job that writes a folder (capture, intervene, train_sae, sae_stats) names the
top-level entries it writes. Before it writes anything, `claim_output_dir` refuses a
folder that holds anything else, listing what, so a mistyped `--out` never mixes a run
into someone's files, and `--overwrite` removes only the job's own entries: a user's
notes, another job's store or a symlink's target are never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.store.layout import STORE_JSON, TMP_SUFFIX
from pipeline.store.location import remove_tree, store_path

_SHOWN = 8


class OutputFolderError(ValueError):
    """The output path cannot be used by this job (it is a file, or holds foreign files)."""


def foreign_entries(root: Path, owned: Iterable[str]) -> list[str]:
    """Top-level names in `root` that the job does not write (hidden temps are its own)."""
    owned = set(owned)
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.name not in owned and not is_temp_name(entry.name)
    )


def claim_output_dir(root: Path, owned: Iterable[str], job: str, overwrite: bool) -> bool:
    """Check `root` may hold this job's output; with `overwrite`, remove the job's entries.

    Returns True when `root` already holds output of this job (to resume or compare),
    False when it is absent or empty (or was just cleared). Raises OutputFolderError when
    `root` is a file or holds entries the job does not write, before touching anything.
    """
    owned = set(owned)
    if root.exists() and not root.is_dir():
        raise OutputFolderError(f"{job}: the output path {root} is a file; give a folder path")
    if root.is_symlink():
        raise OutputFolderError(f"{job}: the output path {root} is a symlink; give a real folder")
    if not root.exists():
        return False
    if (root / STORE_JSON).exists() and STORE_JSON not in owned:
        raise OutputFolderError(
            f"{job}: the output folder {root} is an activation store; nothing was written or "
            "deleted. Give the job its own output folder"
        )
    foreign = foreign_entries(root, owned)
    if foreign:
        shown = ", ".join(foreign[:_SHOWN]) + (
            f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else ""
        )
        raise OutputFolderError(
            f"{job}: the output folder {root} holds files this job did not write ({shown}); "
            "nothing was written or deleted. Choose an empty or new folder for the output"
        )
    present = [entry.name for entry in root.iterdir()]
    if not present:
        return False
    if not overwrite:
        return True
    remove_entries(root, present)
    return False


def claim_fresh_output(
    out: str | Path, owned: Iterable[str], job: str, holds: str, overwrite: bool
) -> Path:
    """`claim_output_dir` for a job that never resumes (sae_stats, eval_sae): earlier output
    (`holds` says what it is) is refused unless `overwrite`, which removes it. Returns the
    output as a path (a folder, or an s3:// prefix)."""
    out = store_path(out)
    if claim_output_dir(out, owned, job, overwrite):
        raise OutputFolderError(
            f"{job}: {out} already holds {holds}; pass --overwrite (overwrite=True) "
            "to replace it, or choose another --out"
        )
    return out


def remove_entries(root: Path, names: Iterable[str]) -> None:
    """Delete these top-level entries of `root` (a symlink itself, never its target)."""
    for name in names:
        entry = root / name
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
        else:
            entry.unlink(missing_ok=True)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)
