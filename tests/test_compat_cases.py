"""The compat tier's end-to-end cases cover what issue 21 asks for (checked without the wheel)."""

from __future__ import annotations

from tests.compat import e2e


def test_end_to_end_cases_cover_the_bar() -> None:
    """The issue's bar: 25 environments, five agents besides simple_agent (one sandboxed), both
    environment servers, three environments/ bundles. Counts the cases, not their outcome."""
    proves = [p for case in e2e.CASES for p in case.proves]
    agents = {
        p
        for p in proves
        if p.startswith("responses_api_agents/") and p != "responses_api_agents/simple_agent"
    }
    assert len(e2e.CASES) >= 25
    assert len(agents) >= 5, sorted(agents)
    assert any(case.sandboxed for case in e2e.CASES)
    assert {"environment_servers/legacy_agent", "environment_servers/single_agent_turn"} <= set(proves)
    assert len({p for p in proves if p.startswith("environments/")}) >= 3
