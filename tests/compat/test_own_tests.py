"""(c) The environments' own tests/, where those tests use only the in-scope core API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = pytest.mark.compat
# The issue sets no bar for this stage, and its failures are not classified by scope yet (about
# half need the network or a git-only requirement): this is a floor just under the measured pass
# rate, so a regression fails the tier. Raise it as failures are fixed or classified.
THRESHOLD = float(os.environ.get("NG_COMPAT_TESTS_THRESHOLD", "0.75"))


def test_environments_own_tests(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    results = harness.run_own_tests_stage()
    text = harness.summary(results, "environments' own tests")
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    ok = sum(r.status == "ok" for r in results)
    assert ok >= THRESHOLD * len(results), text
