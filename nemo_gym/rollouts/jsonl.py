"""Append-only JSONL that survives crashes: one write() per whole line, flushed at once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


class JsonlAppender:
    def __init__(self, path: Path, truncate: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self.path = path
        self._fd = os.open(path, flags, 0o644)

    def write(self, row: dict[str, Any]) -> None:
        # A single write of the full line: a kill can never leave half a row behind.
        os.write(self._fd, orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    def close(self) -> None:
        os.close(self._fd)


def read_complete_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of an output file; a torn last line (no newline) is cut off so appends stay valid."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(keep)
        data = data[:keep]
    for line in data.splitlines():
        if line.strip():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row
