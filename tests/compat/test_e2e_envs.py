"""(b) Environments end to end: simulator → ng_run (our vllm_model + simple_agent, the env's
own resources server and config) → ng_collect_rollouts on the env's data/example.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compat import harness

pytestmark = [pytest.mark.compat, pytest.mark.e2e]


@pytest.mark.parametrize(
    ("name", "yaml_name", "agent", "extra"), harness.E2E, ids=[e[0] for e in harness.E2E]
)
def test_environment_end_to_end(
    wheel_root: Path, tmp_path: Path, name: str, yaml_name: str | None, agent: str | None, extra: tuple
) -> None:
    try:
        outcome = harness.run_e2e(name, yaml_name, agent, extra, tmp_path)
    except harness.E2EError as exc:
        harness.append_e2e_record({"env": name, "status": "failed", "error": harness.first_line(str(exc))})
        pytest.fail(str(exc), pytrace=False)
    record = harness.e2e_verdict(name, outcome)
    harness.append_e2e_record(record)
    assert record["status"] == "ok", (
        json.dumps(record, indent=1) + "\nng_run log tail:\n" + outcome["ng_run_log_tail"]
    )
