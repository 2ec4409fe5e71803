"""(a') Every `environments/` bundle config of the wheel loads as ng_run loads it (nested configs,
manifest, servers found)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = pytest.mark.compat


def test_environment_bundles_load(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    results = harness.run_bundles_stage()
    text = harness.summary(results, "environments/ bundles")
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    assert harness.meets_floor("bundles", results), text
