"""tests/compat/harness.py's bookkeeping: re-runs merge into the report, and each stage's floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import e2e, harness


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(harness, "CACHE", tmp_path)
    monkeypatch.setattr(harness, "REPORT", tmp_path / "report.json")
    return tmp_path / "report.json"


def result(env: str, status: str = "ok", out_of_scope: str = "") -> harness.Result:
    return harness.Result(env, status, "tests", out_of_scope=out_of_scope)


def test_a_re_run_replaces_only_its_servers(report: Path) -> None:
    first = [result("resources_servers/a", "tests_failed"), result("responses_api_agents/b")]
    harness.write_report("own_tests", first)
    saved = harness.write_report("own_tests", [result("resources_servers/a")], merge=True)
    assert (saved["passed"], saved["total"]) == (2, 2)
    assert [(r.env, r.status) for r in harness.stage_results("own_tests")] == [
        ("resources_servers/a", "ok"),
        ("responses_api_agents/b", "ok"),
    ]
    harness.write_report("own_tests", [result("resources_servers/c")])  # a full run replaces all
    assert [r.env for r in harness.stage_results("own_tests")] == ["resources_servers/c"]


def test_floors_count_servers_in_scope_and_environments_end_to_end() -> None:
    passed = [result(f"resources_servers/s{i}") for i in range(8)]
    failed = [result("resources_servers/x", "tests_failed"), result("resources_servers/y", "tests_failed")]
    excluded = [result("resources_servers/z", "tests_failed", "needs network: example.org")]
    assert harness.meets_floor("own_tests", passed + failed + excluded)  # 8/10 in scope
    assert not harness.meets_floor("build", passed + failed + excluded)  # below 90%
    assert harness.meets_floor("e2e", [result(f"case{i}") for i in range(harness.E2E_FLOOR)])
    assert not harness.meets_floor("e2e", [result(f"case{i}") for i in range(harness.E2E_FLOOR - 1)])


def test_e2e_records_of_cases_no_longer_defined_are_dropped(report: Path) -> None:
    harness.append_e2e_record({"env": "retired_case", "status": "failed"})
    case = e2e.CASES[0].id
    harness.append_e2e_record({"env": case, "status": "ok"})
    assert [(r.env, r.status) for r in harness.e2e_results()] == [(case, "ok")]
    assert "retired_case" not in report.read_text()
