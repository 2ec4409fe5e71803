"""Root conftest: hermetic config, and a guard that no test module leaves a process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

os.environ["NEMO_GYM_ENV_YAML"] = "none"


@pytest.fixture(scope="module", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    from nemo_gym.testing.processes import children_of, pid_alive

    before = children_of(os.getpid())
    yield
    deadline = time.monotonic() + 10
    while True:
        left = {p for p in children_of(os.getpid()) - before if pid_alive(p)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind by this module: {sorted(left)}"
