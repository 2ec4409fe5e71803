"""What `<stem>_aggregate_metrics.json` adds to our means: resources servers' own aggregates, fallbacks."""

from __future__ import annotations

import aiohttp
import pytest

from nemo_gym.http.server_client import ServerClient, close_shared_client
from nemo_gym.rollouts.aggregate import is_context_length_fallback, resources_server_aggregates
from nemo_gym.rollouts.failures import FailureTally, classify
from nemo_gym.testing.scripted_server import Answer, ScriptedServer


def _agent(resources: str, port: int) -> dict:
    impl = {
        "host": "127.0.0.1",
        "port": port,
        "resources_server": {"type": "resources_servers", "name": resources},
    }
    return {"responses_api_agents": {"simple_agent": impl}}


def _resources(port: int) -> dict:
    return {"resources_servers": {"impl": {"host": "127.0.0.1", "port": port}}}


async def test_an_aggregate_answer_is_kept_and_a_404_is_skipped() -> None:
    math, weather = ScriptedServer(), ScriptedServer()
    math.on("/aggregate_metrics", Answer(200, {"pass@1": 1.0}))
    weather.on("/aggregate_metrics", Answer(404, {"detail": "Not Found"}))
    rows = {
        "agent_a": [{"_ng_task_index": 0, "_ng_rollout_index": 1, "reward": 1.0, "response": {"big": 1}}],
        "agent_b": [{"_ng_row_index": 2, "_ng_repeat_index": 0, "reward": 0.0}],
    }
    async with math.running(), weather.running():
        config = {
            "agent_a": _agent("math", 5001),
            "agent_b": _agent("weather", 5002),
            "math": _resources(math.port),
            "weather": _resources(weather.port),
        }
        try:
            answers = await resources_server_aggregates(ServerClient(config), rows)
        finally:
            await close_shared_client()
    assert answers == {"math": {"pass@1": 1.0}}
    assert math.calls_to("/aggregate_metrics")[0].json == {
        "verify_responses": [{"_ng_task_index": 0, "_ng_rollout_index": 1, "reward": 1.0}]
    }
    assert len(weather.calls_to("/aggregate_metrics")) == 1


def test_context_length_fallback_is_told_apart_from_a_max_output_tokens_cut() -> None:
    fallback = {"response": {"status": "incomplete", "usage": {"output_tokens": 0}}}
    cut = {"response": {"status": "incomplete", "usage": {"output_tokens": 200}}}
    done = {"response": {"status": "completed", "usage": {"output_tokens": 0}}}
    assert [is_context_length_fallback(r) for r in (fallback, cut, done, {})] == [True, False, False, False]


def test_failure_summary_lists_the_most_common_reasons_first() -> None:
    tally = FailureTally()
    for message in ("HTTP 500: boom", "HTTP 500: again"):
        tally.add("agent_request_failed", message)
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "refused"),
    )
    tally.add(*classify(refused))
    assert tally.summary(10) == (
        "3 of 10 rollouts failed. Most common reasons:\n"
        "  2 × agent_request_failed, e.g.: HTTP 500: boom\n"
        "  1 × transport_unreachable, e.g.: ClientConnectorError: Cannot connect to host 127.0.0.1:1 ssl:default [refused]"
    )
    assert FailureTally().summary(4) == "No failures (4 rollouts attempted)."


def test_agent_routing_precedence_matches_nemo_gym() -> None:
    from pydantic import ValidationError

    from nemo_gym.rollouts.collect import resolve_agent
    from nemo_gym.rollouts.config import RolloutCollectionConfig as Config

    def row(name: str | None) -> dict:
        return {"agent_ref": {"type": "responses_api_agents", "name": name}} if name else {}

    plain = Config(input_jsonl_fpath="i", output_jsonl_fpath="o")
    assert [resolve_agent(plain, row(n)) for n in ("a", None)] == ["a", None]
    named = Config(agent_name="forced", input_jsonl_fpath="i", output_jsonl_fpath="o")
    assert [resolve_agent(named, row(n)) for n in ("a", None)] == ["forced", "forced"]
    mapped = Config(agent_map={"a": "new_a", "_default": "d"}, input_jsonl_fpath="i", output_jsonl_fpath="o")
    assert [resolve_agent(mapped, row(n)) for n in ("a", "b", None)] == ["new_a", "d", "d"]
    with pytest.raises(ValidationError, match="agent_name='forced' conflicts with agent_map._default='d'"):
        Config(
            agent_name="forced", agent_map={"_default": "d"}, input_jsonl_fpath="i", output_jsonl_fpath="o"
        )
