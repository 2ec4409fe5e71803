"""legacy_agent relays `/run` and `/aggregate_metrics` to its agent unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from environment_servers.legacy_agent.app import (
    LegacyAgentEnvironmentServer,
    LegacyAgentEnvironmentServerConfig,
)
from nemo_gym.http.server_client import ServerClient, close_shared_client
from nemo_gym.server.context import RuntimeContext
from nemo_gym.testing.scripted_server import Answer, ScriptedServer


@pytest.fixture
async def agent() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    async with server.running():
        yield server
    await close_shared_client()


async def test_run_and_metrics_are_relayed(agent: ScriptedServer) -> None:
    agent.on(
        "/run",
        lambda c: Answer(207, {**c.json, "reward": 0.5}, {"set-cookie": "a=1; path=/", "x-agent": "yes"}),
    )
    agent.on("/aggregate_metrics", Answer(200, {"agent_metrics": {"mean/reward": 0.5}}))
    global_config = {"weather_agent": {"responses_api_agents": {"simple_agent": agent.address}}}
    config = LegacyAgentEnvironmentServerConfig(
        name="relay", agent_server={"type": "responses_api_agents", "name": "weather_agent"}
    )
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="relay", session_secret="s"
    )
    server = LegacyAgentEnvironmentServer(
        config=config, server_client=ServerClient(global_config)
    ).bind_context(context)
    row = {"responses_create_params": {"input": "hi"}, "_ng_task_index": 0, "custom": [1, 2]}
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env", cookies={"mine": "c"}) as client:
        relayed = await client.post("/run", json=row, headers={"x-trace": "t1"})
        metrics = await client.post("/aggregate_metrics", json={"verify_responses": []})
    assert relayed.status_code == 207 and relayed.json() == {**row, "reward": 0.5}
    assert relayed.headers["x-agent"] == "yes" and relayed.cookies["a"] == "1"
    sent = agent.calls_to("/run")[0]
    assert sent.json == row and sent.headers["x-trace"] == "t1" and "mine=c" in sent.headers["cookie"]
    assert metrics.json()["agent_metrics"] == {"mean/reward": 0.5}


def test_limits_are_accepted_but_not_applied(caplog: pytest.LogCaptureFixture) -> None:
    ref = {"type": "responses_api_agents", "name": "a"}
    config = LegacyAgentEnvironmentServerConfig(name="relay", agent_server=ref)
    assert (config.default_episode_timeout_seconds, config.cleanup_timeout_seconds) == (21600, 180)
    LegacyAgentEnvironmentServerConfig(name="relay", agent_server=ref, cleanup_timeout_seconds=5)
    assert "relay sets cleanup_timeout_seconds, which a relay does not apply" in caplog.text
