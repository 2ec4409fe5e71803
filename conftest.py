"""Root conftest: hermetic config, and a guard that no test module leaves a process behind."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["NEMO_GYM_ENV_YAML"] = "none"
# Every process this test run starts inherits this marker, so the guard can tell our orphans
# (re-parented to init) from another checkout's servers or a user's own ng_run on the machine.
RUN_MARKER = f"NEMO_GYM_TEST_RUN={os.getpid()}-{uuid.uuid4().hex}"
os.environ["NEMO_GYM_TEST_RUN"] = RUN_MARKER.split("=", 1)[1]
_MARKER_BYTES = RUN_MARKER.encode()


def _ours() -> set[int]:
    """This run's descendants, plus orphans that carry this run's marker in their environment."""
    from nemo_gym.testing.processes import children_of, pid_alive

    pids = children_of(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if _MARKER_BYTES in environ.split(b"\0"):
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
