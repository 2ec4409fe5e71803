"""What `<stem>_aggregate_metrics.json` adds to our means: resources servers' own aggregates, fallbacks."""

from __future__ import annotations

import json

import httpx
import respx

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.aggregate import is_context_length_fallback, resources_server_aggregates
from nemo_gym.rollouts.failures import FailureTally, classify


def _agent(resources: str, port: int) -> dict:
    impl = {
        "host": "127.0.0.1",
        "port": port,
        "resources_server": {"type": "resources_servers", "name": resources},
    }
    return {"responses_api_agents": {"simple_agent": impl}}


def _resources(port: int) -> dict:
    return {"resources_servers": {"impl": {"host": "127.0.0.1", "port": port}}}


CONFIG = {
    "agent_a": _agent("math", 5001),
    "agent_b": _agent("weather", 5002),
    "math": _resources(5003),
    "weather": _resources(5004),
}


async def test_an_aggregate_answer_is_kept_and_a_404_is_skipped() -> None:
    client = ServerClient(CONFIG, client=httpx.AsyncClient())
    rows = {
        "agent_a": [{"_ng_task_index": 0, "_ng_rollout_index": 1, "reward": 1.0, "response": {"big": 1}}],
        "agent_b": [{"_ng_row_index": 2, "_ng_repeat_index": 0, "reward": 0.0}],
    }
    with respx.mock(using="httpx") as router:
        math = router.post("http://127.0.0.1:5003/aggregate_metrics").respond(200, json={"pass@1": 1.0})
        router.post("http://127.0.0.1:5004/aggregate_metrics").respond(404, json={"detail": "Not Found"})
        answers = await resources_server_aggregates(client, rows)
    await client.aclose()
    assert answers == {"math": {"pass@1": 1.0}}
    assert json.loads(math.calls[0].request.content) == {
        "verify_responses": [{"_ng_task_index": 0, "_ng_rollout_index": 1, "reward": 1.0}]
    }


def test_context_length_fallback_is_told_apart_from_a_max_output_tokens_cut() -> None:
    fallback = {"response": {"status": "incomplete", "usage": {"output_tokens": 0}}}
    cut = {"response": {"status": "incomplete", "usage": {"output_tokens": 200}}}
    done = {"response": {"status": "completed", "usage": {"output_tokens": 0}}}
    assert [is_context_length_fallback(r) for r in (fallback, cut, done, {})] == [True, False, False, False]


def test_failure_summary_lists_the_most_common_reasons_first() -> None:
    tally = FailureTally()
    for message in ("HTTP 500: boom", "HTTP 500: again"):
        tally.add("agent_request_failed", message)
    tally.add(*classify(httpx.ConnectError("refused")))
    assert tally.summary(10) == (
        "3 of 10 rollouts failed. Most common reasons:\n"
        "  2 × agent_request_failed, e.g.: HTTP 500: boom\n"
        "  1 × transport_unreachable, e.g.: ConnectError: refused"
    )
    assert FailureTally().summary(4) == "No failures (4 rollouts attempted)."


def test_agent_routing_precedence_matches_nemo_gym() -> None:
    from pathlib import Path

    from nemo_gym.rollouts.collect import CollectSettings, resolve_agent

    def row(name: str | None) -> dict:
        return {"agent_ref": {"type": "responses_api_agents", "name": name}} if name else {}

    plain = CollectSettings(agent_name=None, input_path=Path("i"), output_path=Path("o"))
    assert [resolve_agent(plain, row(n)) for n in ("a", None)] == ["a", None]
    named = CollectSettings(agent_name="forced", input_path=Path("i"), output_path=Path("o"))
    assert [resolve_agent(named, row(n)) for n in ("a", None)] == ["forced", "forced"]
    mapped = CollectSettings(
        agent_name="forced",
        input_path=Path("i"),
        output_path=Path("o"),
        agent_map={"a": "new_a", "_default": "d"},
    )
    assert [resolve_agent(mapped, row(n)) for n in ("a", "b", None)] == ["new_a", "d", "d"]
