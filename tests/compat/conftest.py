"""The compat tier (`make test-compat`): NeMo Gym 0.7.0's own environments against our framework.

Every test here carries the `compat` marker; plain `make test` deselects it (pyproject addopts).
Run under the compat venv's python (the Makefile does), which sees our .venv's packages plus
the environments' requirements, and resolves `resources_servers.<name>` into the unzipped wheel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.compat import harness


@pytest.fixture(scope="session")
def wheel_root() -> Path:
    if Path(sys.prefix).resolve() != harness.VENV.resolve():
        pytest.fail(f"run the compat tier with {harness.venv_python()} (use `make test-compat`)")
    root = harness.ensure_wheel()
    os.environ["NG_COMPAT_EXTRA_ROOTS"] = str(root)  # ng_run's servers find the wheel's environments
    return root
