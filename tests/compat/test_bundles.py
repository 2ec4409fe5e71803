"""(a') Every `environments/` bundle config of the wheel loads as ng_run loads it (nested configs,
manifest, servers found)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = pytest.mark.compat
THRESHOLD = float(os.environ.get("NG_COMPAT_BUNDLES_THRESHOLD", "0.9"))


def test_environment_bundles_load(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    results = harness.run_bundles_stage()
    text = harness.summary(results, "environments/ bundles")
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    ok = sum(r.status == "ok" for r in results)
    assert ok >= THRESHOLD * len(results), text
