"""(a) Every in-scope environment's app.py imports and builds its FastAPI app from its own config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = pytest.mark.compat


def test_in_scope_environments_build(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    results = harness.run_build_stage()
    text = harness.summary(results, "build apps")
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    assert harness.meets_floor("build", results), text
