"""simple_agent's NeMo Gym 0.7.0 observability (`ng_trajectory`) and episode sessions, against
scripted model and resources servers on 127.0.0.1."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
from fastapi import Request

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollout_observability import AgentObservationBundle, TrajectoryRecord
from nemo_gym.rollouts.trajectory import _attach_ng_perf, _attach_trajectory_record
from nemo_gym.server.context import RuntimeContext
from nemo_gym.testing.scripted_server import Answer, ScriptedServer
from responses_api_agents.simple_agent.app import (
    SimpleAgent,
    SimpleAgentConfig,
    SimpleAgentRunRequest,
    SimpleAgentVerifyResponse,
)
from responses_api_agents.simple_agent.tests.helpers import agent_client

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}]
MODEL_REF = {"type": "responses_api_models", "name": "policy_model"}
CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "c1",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "look it up"}]}
MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "It is cold.", "annotations": []}],
}
TOOL_OUTPUT = '{"city":"Paris","weather_description":"cold"}'


def usage(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def response(response_id: str, *items: dict[str, Any], tokens: dict[str, Any] | None = None) -> Answer:
    body = {
        "id": response_id,
        "object": "response",
        "created_at": 1.0,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "status": "completed",
        "model": "m",
        "output": list(items),
    }
    if tokens is not None:
        body["usage"] = tokens
    return Answer(200, body)


# Observability on unless a test says otherwise; the resources server is named "weather".
agent = functools.partial(agent_client, resources_name="weather", observability=True)


def script_weather_rollout(model: ScriptedServer, res: ScriptedServer, verify_extra: dict[str, Any]) -> None:
    model.on(
        "/v1/responses",
        [
            response("resp_a", REASONING, CALL, tokens=usage(10, 4, reasoning=2, cached=6)),
            response("resp_b", MESSAGE, tokens=usage(20, 3)),
        ],
    )
    res.on("/seed_session", Answer(200, {}))
    res.on("/get_weather", Answer(200, TOOL_OUTPUT))
    res.on("/verify", lambda c: Answer(200, {**c.json, "reward": 1.0, **verify_extra}))


def without_times(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its clock readings replaced by their type (they differ run to run)."""
    times = ("timestamp", "started_at", "completed_at", "duration_ms")
    if isinstance(record, dict):
        return {k: type(v).__name__ if k in times else without_times(v) for k, v in record.items()}
    if isinstance(record, list):
        return [without_times(item) for item in record]
    return record


ROW = {
    "responses_create_params": {"input": "Weather in Paris?", "tools": TOOLS},
    "_ng_task_index": 4,
    "_ng_rollout_index": 1,
}
QUESTION_1 = [{"role": "user", "content": "Weather in Paris?"}]
FUNCTION_OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": TOOL_OUTPUT}
REF_A = {"model_call_id": None, "model_ref": MODEL_REF, "response_id": "resp_a"}
REF_B = {"model_call_id": None, "model_ref": MODEL_REF, "response_id": "resp_b"}


async def test_run_result_carries_the_exact_trajectory(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    script_weather_rollout(model, res, {"resolved": True})
    async with agent(servers) as client:
        result = (await client.post("/run", json=ROW)).json()
    # What the verifier saw carries no trajectory of its own.
    assert "ng_trajectory" not in res.calls_to("/verify")[0].json
    trajectory = result["ng_trajectory"]
    TrajectoryRecord.model_validate(trajectory)
    assert without_times(trajectory) == {
        "schema_version": "1.0",
        "task_id": "4",
        "rollout_id": "4-1",
        "invocations": [
            {
                "kind": "agent_invocation",
                "invocation_id": "root",
                "status": "completed",
                "model_calls": [REF_A, REF_B],
                "conversation": [*QUESTION_1, REASONING, CALL, FUNCTION_OUTPUT, MESSAGE],
            }
        ],
        "turns": [
            {
                "invocation_id": "root",
                "task_id": "4",
                "rollout_id": "4-1",
                "turn_no": 1,
                "timestamp": "float",
                "question": QUESTION_1,
                "answer": [CALL],
                "reasoning_content": [REASONING],
                "resolved": None,
                "step_count": 1,
                "model_calls": [REF_A],
            },
            {
                "invocation_id": "root",
                "task_id": "4",
                "rollout_id": "4-1",
                "turn_no": 2,
                "timestamp": "float",
                "question": [*QUESTION_1, REASONING, CALL, FUNCTION_OUTPUT],
                "answer": [MESSAGE],
                "reasoning_content": None,
                "resolved": True,
                "step_count": 1,
                "model_calls": [REF_B],
            },
        ],
        "model_calls": [
            {
                "started_at": "float",
                "completed_at": "float",
                "duration_ms": "float",
                "response_metadata": {
                    "response_id": rid,
                    "model_ref": MODEL_REF,
                    "model": "m",
                    "response_status": "completed",
                },
                "token_stats": stats,
            }
            for rid, stats in (
                (
                    "resp_a",
                    {
                        "prompt_tokens": 10,
                        "completion_tokens": 4,
                        "reasoning_tokens": 2,
                        "total_tokens": 14,
                        "cached_tokens": 6,
                    },
                ),
                (
                    "resp_b",
                    {
                        "prompt_tokens": 20,
                        "completion_tokens": 3,
                        "reasoning_tokens": 0,
                        "total_tokens": 23,
                        "cached_tokens": 0,
                    },
                ),
            )
        ],
        "tool_calls": [
            {
                "kind": "tool_call",
                "invocation_id": "root",
                "tool_call_id": "c1",
                "tool_name": "get_weather",
                "started_at": "float",
                "completed_at": "float",
                "duration_ms": "float",
                "timing_source": "executor",
                "status": "completed",
                "error_type": None,
                "output": TOOL_OUTPUT,
            }
        ],
        "gaps": [],
    }
    turn_1, turn_2 = trajectory["turns"]
    assert turn_1["timestamp"] <= turn_2["timestamp"]
    tool = trajectory["tool_calls"][0]
    assert turn_1["timestamp"] <= tool["started_at"] <= tool["completed_at"] <= turn_2["timestamp"]


async def test_collection_projects_the_trajectory_and_sums_ng_perf(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    script_weather_rollout(model, res, {})
    async with agent(servers) as client:
        result = (await client.post("/run", json=ROW)).json()
    row = {k: v for k, v in ROW.items()}
    _attach_trajectory_record(row, result)
    _attach_ng_perf(result, observability_enabled=True, rollout_latency_ms=41.5)
    assert result["ng_perf"] == {
        "num_turns": 2,
        "num_tool_calls": 1,
        "token_observability_coverage": 1.0,
        "prompt_tokens": 30,
        "cached_prompt_tokens": 6,
        "completion_tokens": 7,
        "reasoning_tokens": 2,
        "total_latency_ms": 41.5,
    }
    # The verifier said nothing about resolution: the projection keeps the agent's gap.
    assert result["ng_trajectory"]["gaps"] == [
        {"code": "resolution_unavailable", "invocation_id": "root", "detail": None}
    ]


async def test_failed_and_bad_tool_calls_are_recorded(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, res = servers
    bad_json = {**CALL, "call_id": "c2", "arguments": "{oops"}
    model.on("/v1/responses", [response("resp_a", CALL, bad_json), response("resp_b", MESSAGE)])
    res.on("/seed_session", Answer(200, {}))
    res.on("/get_weather", Answer(422, "bad input"))
    res.on("/verify", lambda c: Answer(200, {**c.json, "reward": 0.0}))
    async with agent(servers) as client:
        result = (await client.post("/run", json=ROW)).json()
    tools = result["ng_trajectory"]["tool_calls"]
    assert [(t["tool_call_id"], t["status"], t["error_type"]) for t in tools] == [
        ("c1", "failed", "http_422"),
        ("c2", "failed", "JSONDecodeError"),
    ]
    assert tools[0]["output"] == "Error: tool get_weather failed with HTTP 422: bad input"
    assert [turn["step_count"] for turn in result["ng_trajectory"]["turns"]] == [2, 2]


async def test_max_steps_and_missing_response_ids_are_stated(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    model.on(
        "/v1/responses",
        lambda _: Answer(200, {"object": "response", "status": "completed", "output": [CALL]}),
    )
    res.on("/seed_session", Answer(200, {}))
    res.on("/get_weather", Answer(200, "ok"))
    res.on("/verify", lambda c: Answer(200, {**c.json, "reward": 0.0}))
    async with agent(servers, max_steps=2) as client:
        trajectory = (await client.post("/run", json=ROW)).json()["ng_trajectory"]
    assert trajectory["invocations"][0]["status"] == "incomplete"
    assert trajectory["model_calls"] == [] and trajectory["invocations"][0]["model_calls"] == []
    assert trajectory["gaps"] == [
        {"code": "model_call_reference_unavailable", "invocation_id": "root", "detail": "turn:1"},
        {"code": "model_call_reference_unavailable", "invocation_id": "root", "detail": "turn:2"},
        {"code": "resolution_unavailable", "invocation_id": "root"},
    ]


@pytest.mark.parametrize(
    ("observability", "row"),
    [(False, ROW), (True, {"responses_create_params": ROW["responses_create_params"]})],
    ids=["observability-off", "no-rollout-id"],
)
async def test_no_trajectory_without_observability_or_rollout_id(
    servers: tuple[ScriptedServer, ScriptedServer], observability: bool, row: dict[str, Any]
) -> None:
    model, res = servers
    script_weather_rollout(model, res, {})
    async with agent(servers, observability=observability) as client:
        result = (await client.post("/run", json=row)).json()
    assert "ng_trajectory" not in result and result["reward"] == 1.0


async def test_skip_verification_answers_without_verify(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    script_weather_rollout(model, res, {})
    async with agent(
        servers, observability=False, skip_verification=True, skip_verification_reward=0.25
    ) as client:
        result = (await client.post("/run", json=ROW)).json()
    assert not res.calls_to("/verify")
    assert (result["reward"], result["verification_skipped"], result["_ng_task_index"]) == (0.25, True, 4)


def seed_body(session_id: str = "agent-session-1", access: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "agent_session_id": session_id,
        "episode_id": {"rollout_id": "7-0"},
        "task_id": {"taskset": "weather", "task_id": "7"},
        "tool_accesses": [access] if access else [],
    }


def direct_access(res: ScriptedServer) -> dict[str, Any]:
    return {
        "kind": "direct_http",
        "name": "weather.direct_http",
        "required": True,
        "base_url": f"http://127.0.0.1:{res.port}",
        "cookies": {"weather_cookie": "seeded"},
        "headers": {"x-grant": "g1"},
    }


async def test_session_uses_its_grant_and_returns_observations(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    model.on("/v1/responses", [response("resp_a", CALL), response("resp_b", MESSAGE)])
    res.on("/get_weather", Answer(200, TOOL_OUTPUT, {"set-cookie": "weather_cookie=after-tool; path=/"}))
    close = {"agent_session_id": "agent-session-1", "episode_id": {"rollout_id": "7-0"}}
    async with agent(servers) as client:
        seeded = await client.post("/v1/agent_sessions", json=seed_body(access=direct_access(res)))
        assert seeded.json() == {"agent_session_id": "agent-session-1"}
        answer = await client.post("/ng-rollout/7-0/v1/responses", json={"input": "Weather?", "tools": TOOLS})
        closed = (await client.post("/v1/agent_sessions/close", json=close)).json()
        again = (await client.post("/v1/agent_sessions/close", json=close)).json()
        late_seed = await client.post("/v1/agent_sessions", json=seed_body(access=direct_access(res)))
    assert answer.status_code == 200 and "_ng_trajectory" not in answer.json()
    tool_call = res.calls_to("/get_weather")[0]
    assert tool_call.headers["cookie"] == "weather_cookie=seeded" and tool_call.headers["x-grant"] == "g1"
    assert closed == again
    assert closed["resources_cookies"] == {"weather_cookie": "after-tool"}
    bundle = AgentObservationBundle.model_validate(closed["agent_observations"])
    invocation, tool = bundle.records
    assert (bundle.source, invocation.invocation_id, invocation.status) == (
        "simple_agent",
        "root",
        "completed",
    )
    assert [ref.response_id for ref in invocation.model_calls] == ["resp_a", "resp_b"]
    assert (tool.kind, tool.tool_call_id, tool.status) == ("tool_call", "c1", "completed")
    assert late_seed.status_code == 409
    assert late_seed.json()["error"]["message"] == "the agent session is already closed"


async def test_session_activations_get_their_own_invocations(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, _ = servers
    model.on("/v1/responses", lambda _: response("resp_x", MESSAGE))
    async with agent(servers) as client:
        await client.post("/v1/agent_sessions", json=seed_body())
        for _ in range(3):
            await client.post("/ng-rollout/7-0/v1/responses", json={"input": "hi"})
        closed = (
            await client.post(
                "/v1/agent_sessions/close",
                json={"agent_session_id": "agent-session-1", "episode_id": {"rollout_id": "7-0"}},
            )
        ).json()
    ids = [record["invocation_id"] for record in closed["agent_observations"]["records"]]
    assert ids == ["root", "activation-2", "activation-3"]


async def test_session_refusals(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, _ = servers
    model.on("/v1/responses", [response("resp_a", CALL)])
    mcp = {
        "kind": "mcp",
        "name": "weather_mcp",
        "required": True,
        "connection": {"url": "http://127.0.0.1:1/mcp"},
    }
    async with agent(servers) as client:
        refused = await client.post("/v1/agent_sessions", json=seed_body(access=mcp))
        await client.post("/v1/agent_sessions", json=seed_body("no-grant"))
        no_grant = await client.post("/ng-rollout/7-0/v1/responses", json={"input": "x", "tools": TOOLS})
        rebind = await client.post(
            "/v1/agent_sessions",
            json={**seed_body("no-grant"), "task_id": {"taskset": "weather", "task_id": "8"}},
        )
    assert refused.status_code == 400
    assert (
        refused.json()["error"]["message"]
        == "simple_agent does not support required MCP tool access: weather_mcp"
    )
    assert no_grant.status_code == 400
    assert no_grant.json()["error"]["message"] == (
        "the model called tool 'get_weather', but this agent session has no direct HTTP tool access"
    )
    assert rebind.status_code == 409


async def test_execute_tools_false_returns_calls_unexecuted(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    model.on("/v1/responses", [response("resp_a", CALL)])
    async with agent(servers, execute_tools=False) as client:
        outside = await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})
        await client.post("/v1/agent_sessions", json=seed_body(access=direct_access(res)))
        inside = await client.post("/ng-rollout/7-0/v1/responses", json={"input": "x", "tools": TOOLS})
    assert outside.status_code == 400
    assert [item["type"] for item in inside.json()["output"]] == ["function_call"]
    assert not res.calls_to("/get_weather")


async def test_prefixed_self_call_carries_the_internal_trajectory(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, _ = servers
    model.on("/v1/responses", [response("resp_a", MESSAGE)])
    async with agent(servers) as client:
        answer = (await client.post("/ng-rollout/0-0/v1/responses", json={"input": "hi"})).json()
    assert (
        answer["_ng_trajectory"]["rollout_id"] == "0-0" and answer["_ng_trajectory"]["task_id"] == "unscoped"
    )


async def test_a_subclass_overriding_run_gets_a_typed_result(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    seen: list[Any] = []

    class Wrapping(SimpleAgent):
        async def run(self, request: Request, body: SimpleAgentRunRequest) -> SimpleAgentVerifyResponse:
            result = await super().run(request, body)
            seen.append(result)
            return result

    model, res = servers
    script_weather_rollout(model, res, {"resolved": False})
    global_config = {
        "observability_enabled": True,
        "policy_model": {"responses_api_models": {"vllm_model": model.address}},
        "weather": {"resources_servers": {"simple_weather": res.address}},
    }
    config = SimpleAgentConfig(
        resources_server={"type": "resources_servers", "name": "weather"}, model_server=MODEL_REF
    )
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="agent", session_secret="s"
    )
    server = Wrapping(config=config, server_client=ServerClient(global_config)).bind_context(context)
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        answer = (await client.post("/run", json=ROW)).json()
    [typed] = seen
    assert isinstance(typed, SimpleAgentVerifyResponse) and typed.reward == 1.0
    assert (
        typed.model_extra is not None and typed.model_extra["ng_trajectory"]["turns"][-1]["resolved"] is False
    )
    assert answer["reward"] == 1.0 and answer["ng_trajectory"]["rollout_id"] == "4-1"


async def test_sessions_need_one_worker(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    """A 400 over HTTP; the ValueError NeMo Gym raises when called directly."""
    from nemo_gym.base_responses_api_agent import AgentSeedSessionRequest, SessionsNeedOneWorker

    message = "agent sessions require num_workers=1 (one process holds them); this agent runs 2"
    async with agent(servers, num_workers=2) as client:
        refused = await client.post("/v1/agent_sessions", json=seed_body())
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == message

    server = SimpleAgent(
        config=SimpleAgentConfig(
            resources_server={"type": "resources_servers", "name": "weather"},
            model_server=MODEL_REF,
            num_workers=2,
        ),
        server_client=ServerClient({}),
    )
    with pytest.raises(ValueError, match="sessions require num_workers=1") as caught:
        await server.seed_agent_session(
            Request({"type": "http", "headers": []}), AgentSeedSessionRequest(**seed_body())
        )
    assert isinstance(caught.value, SessionsNeedOneWorker)
