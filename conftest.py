"""Root conftest: hermetic config, and a guard that no test module leaves a process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["NEMO_GYM_ENV_YAML"] = "none"
ROOT = str(Path(__file__).resolve().parent)


def _ours() -> set[int]:
    """Our descendants, plus any process running this project's code (orphans re-parented to init)."""
    from nemo_gym.testing.processes import children_of, pid_alive

    pids = children_of(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if ROOT in cmdline or "nemo_gym." in cmdline:
                pids.add(int(entry.name))
    return {p for p in pids if pid_alive(p)}


@pytest.fixture(scope="module", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    before = _ours()
    yield
    deadline = time.monotonic() + 10
    while True:
        left = _ours() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind by this module: {sorted(left)}"
