"""Helpers for the sandbox tests: find processes by a unique token, wait for them to go."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

BWRAP = shutil.which("bwrap")


def _bwrap_unusable() -> str | None:
    """Why the isolated provider cannot run on this machine, judged by bubblewrap alone."""
    if BWRAP is None:
        return "the isolated provider needs bubblewrap: `bwrap` is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = subprocess.run(
        [BWRAP, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces on this machine: {probe.stderr.strip()}"
    return None


_UNUSABLE = _bwrap_unusable()
needs_bwrap = pytest.mark.skipif(_UNUSABLE is not None, reason=str(_UNUSABLE))


def token() -> str:
    """A number no other process on the machine has on its command line (`sleep <token>`)."""
    return f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**9:09d}"


def processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and "pytest" not in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(text: str, timeout_s: float = 5.0) -> list[int]:
    """Processes still carrying `text` after waiting up to `timeout_s` for them to exit."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_with(text)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


async def appear(text: str, count: int = 1, timeout_s: float = 10.0) -> list[int]:
    """Wait (without blocking the event loop) until `count` processes carry `text`."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while True:
        found = processes_with(text)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)
