"""(c) Every server's own tests/, run against our framework (the wheel's copies of servers we ship)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = pytest.mark.compat


def test_environments_own_tests(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    results = harness.run_own_tests_stage()
    text = harness.summary(results, "servers' own tests")
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    assert harness.meets_floor("own_tests", results), text
