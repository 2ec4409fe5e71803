"""(b) Environments end to end: simulator → ng_run (our vllm_model, the wheel's config: a resources
server's with its agent, a NeMo Gym agent's, or an `environments/` bundle) → ng_collect_rollouts on
the case's example rows. The cases: tests/compat/e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compat import e2e, harness

pytestmark = [pytest.mark.compat, pytest.mark.e2e]


@pytest.mark.parametrize("case", e2e.CASES, ids=[c.id for c in e2e.CASES])
def test_environment_end_to_end(wheel_root: Path, tmp_path: Path, case: e2e.Case) -> None:
    try:
        outcome = e2e.run(wheel_root, harness.CACHE, case, tmp_path)
    except e2e.E2EError as exc:
        record = {"env": case.id, "proves": list(case.proves), "status": "failed"}
        harness.append_e2e_record({**record, "error": e2e.first_line(str(exc))})
        pytest.fail(str(exc), pytrace=False)
    record = e2e.verdict(case, outcome)
    harness.append_e2e_record(record)
    assert record["status"] == "ok", (
        json.dumps(record, indent=1) + "\nng_run log tail:\n" + outcome["ng_run_log_tail"]
    )


def test_enough_environments_end_to_end(wheel_root: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 21's floor, over the latest record of every case (this run's replace earlier ones)."""
    results = harness.e2e_results()
    text = harness.e2e_summary(results)
    with capsys.disabled():
        print("\n" + text + f"\n(report: {harness.REPORT})")
    assert harness.meets_floor("e2e", results), text
