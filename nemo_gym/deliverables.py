"""Which files in an agent's output directory are deliverables (what the task asked it to
produce), as opposed to the harness's own bookkeeping."""

from __future__ import annotations

from pathlib import Path

# Files and folders agent harnesses write for themselves.
IGNORE_FILES = frozenset(
    {
        "finish_params.json",
        "history.json",
        "history.pkl",
        "inprogress_history.json",
        "metadata.json",
        "log.txt",
        "reference_files",
    }
)


def is_deliverable(path: Path) -> bool:
    """A regular file whose name is not the harness's own."""
    return path.is_file() and path.name not in IGNORE_FILES


__all__ = ["IGNORE_FILES", "is_deliverable"]
