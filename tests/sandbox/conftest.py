"""Fixtures of the sandbox tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A scratch directory every host user may enter (the isolated provider's commands run as
    `nobody` under a root server, and pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ng_sandbox_test_"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)
