"""single_agent_turn against scripted resources and agent servers on 127.0.0.1: the calls an
episode makes, in order and with what, and how each stage's failure is answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from environment_servers.single_agent_turn.app import (
    SingleAgentTurnEnvironmentServer,
    SingleAgentTurnEnvironmentServerConfig,
)
from nemo_gym.http.server_client import ServerClient, close_shared_client
from nemo_gym.server.context import RuntimeContext
from nemo_gym.testing.payloads import assistant_response
from nemo_gym.testing.scripted_server import Answer, ScriptedServer

EPISODE = {"rollout_id": "3-0", "attempt": 1}
TASK_ID = {"taskset": "weather", "task_id": "3"}
PARAMS = {"input": "Weather in Oslo?"}
RESPONSE = assistant_response("Cold.")
OBSERVATIONS = {
    "source": "simple_agent",
    "records": [{"kind": "agent_invocation", "invocation_id": "root"}],
    "gaps": [],
}


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ScriptedServer, ScriptedServer]]:
    resources, agent = ScriptedServer(), ScriptedServer()
    async with resources.running(), agent.running():
        yield resources, agent
    await close_shared_client()


def script_happy(resources: ScriptedServer, agent: ScriptedServer) -> None:
    resources.on(
        "/seed_session",
        lambda c: Answer(
            200,
            {"resources_session_id": c.json["resources_session_id"]},
            {"set-cookie": "res=seeded; path=/"},
        ),
    )
    resources.on("/verify", lambda c: Answer(200, {**c.json, "reward": 1.0, "city": "Oslo"}))
    resources.on(
        "/close_session", lambda c: Answer(200, {"resources_session_id": c.json["resources_session_id"]})
    )
    agent.on(
        "/v1/agent_sessions",
        lambda c: Answer(
            200, {"agent_session_id": c.json["agent_session_id"]}, {"set-cookie": "ag=1; path=/"}
        ),
    )
    agent.on("/ng-rollout/3-0-a1/v1/responses", Answer(200, RESPONSE))
    agent.on(
        "/v1/agent_sessions/close",
        lambda c: Answer(
            200,
            {
                "agent_session_id": c.json["agent_session_id"],
                "agent_observations": OBSERVATIONS,
                "resources_cookies": {"res": "after-agent"},
            },
        ),
    )


async def run_episode(resources: ScriptedServer, agent: ScriptedServer, **config: Any) -> dict[str, Any]:
    global_config = {
        "weather": {"resources_servers": {"simple_weather": resources.address}},
        "weather_agent": {"responses_api_agents": {"simple_agent": agent.address}},
    }
    env_config = SingleAgentTurnEnvironmentServerConfig(
        name="weather_turn",
        resources_server={"type": "resources_servers", "name": "weather"},
        agent_server={"type": "responses_api_agents", "name": "weather_agent"},
        **config,
    )
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="weather_turn", session_secret="s"
    )
    server = SingleAgentTurnEnvironmentServer(config=env_config, server_client=ServerClient(global_config))
    server.bind_context(context)
    body = {
        "episode_id": EPISODE,
        "task": {"task_id": TASK_ID, "task_input": {"responses_create_params": PARAMS, "city": "Oslo"}},
    }
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env") as client:
        answer = await client.post("/run", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_one_turn_in_order(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    resources, agent = servers
    script_happy(resources, agent)
    answer = await run_episode(resources, agent, resources_tool_transports=["direct_http"])
    assert [c.path for c in resources.calls] == ["/seed_session", "/verify", "/close_session"]
    assert [c.path for c in agent.calls] == [
        "/v1/agent_sessions",
        "/ng-rollout/3-0-a1/v1/responses",
        "/v1/agent_sessions/close",
    ]
    seed = resources.calls[0].json
    session_id = seed["resources_session_id"]
    assert seed == {
        "resources_session_id": session_id,
        "episode_id": EPISODE,
        "task_id": TASK_ID,
        "task_data": {"city": "Oslo"},
    }
    agent_seed = agent.calls[0].json
    assert agent_seed["tool_accesses"] == [
        {
            "kind": "direct_http",
            "name": "weather.direct_http",
            "required": True,
            "base_url": f"http://127.0.0.1:{resources.port}/",
            "cookies": {"res": "seeded"},
            "headers": {},
        }
    ]
    assert agent.calls[1].json == PARAMS and agent.calls[1].headers["cookie"] == "ag=1"
    verify = resources.calls[1]
    # Verification uses the cookies the agent ended with, and the row's own fields.
    assert verify.headers["cookie"] == "res=after-agent"
    assert verify.json["city"] == "Oslo" and verify.json["response"]["id"] == "resp_1"
    assert resources.calls[2].json == {"resources_session_id": session_id, "episode_id": EPISODE}
    assert answer["failure"] is None
    result = answer["result"]
    assert (result["reward"], result["city"]) == (1.0, "Oslo")
    assert result["ng_agent_observations"]["records"][0]["invocation_id"] == "root"


@pytest.mark.parametrize(("status", "terminal"), [(503, False), (429, False), (400, True)])
async def test_seed_failure_is_a_seed_stage_answer(
    servers: tuple[ScriptedServer, ScriptedServer], status: int, terminal: bool
) -> None:
    resources, agent = servers
    script_happy(resources, agent)
    resources.on("/seed_session", Answer(status, {"error": {"message": "no"}}))
    answer = await run_episode(resources, agent)
    failure = answer["failure"]
    assert (failure["stage"], failure["terminal"]) == ("seed", terminal)
    assert failure["failure_reason"].endswith(f'returned {status}: {{"error":{{"message":"no"}}}}')
    # The seed may have happened even though its answer failed: the session is still closed.
    assert [c.path for c in resources.calls] == ["/seed_session", "/close_session"] and not agent.calls


async def test_seed_without_cookie_and_verify_failure(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    resources, agent = servers
    script_happy(resources, agent)
    resources.on(
        "/seed_session", lambda c: Answer(200, {"resources_session_id": c.json["resources_session_id"]})
    )
    no_cookie = (await run_episode(resources, agent))["failure"]
    assert no_cookie == {
        "failure_reason": "the resources seed set no session cookie",
        "terminal": True,
        "stage": "seed",
        "partial_response": None,
    }

    script_happy(resources, agent)
    resources.on("/verify", Answer(500, "judge down"))
    failure = (await run_episode(resources, agent))["failure"]
    assert (failure["stage"], failure["terminal"]) == ("verification", False)
    assert failure["partial_response"]["id"] == "resp_1"


async def test_mcp_transport_needs_the_seed_metadata(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    resources, agent = servers
    script_happy(resources, agent)
    failure = (await run_episode(resources, agent, resources_tool_transports=["mcp"]))["failure"]
    assert failure["failure_reason"] == (
        "the resources seed returned no MCP metadata, but resources_tool_transports asks for mcp"
    )
    assert not agent.calls
