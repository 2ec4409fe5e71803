"""The agent loop against scripted model and resources servers on 127.0.0.1 (the production
aiohttp client path, no client mocks)."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_gym.testing.scripted_server import Answer, ScriptedServer
from responses_api_agents.simple_agent.tests.helpers import agent_client

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}]
MODEL_COOKIE = "VLLMModel___policy_model=sess-1.sig"
RES_COOKIE = "SimpleWeather___simple_weather=res-1.sig"


# The agent with max_steps and the rest of its defaults.
agent = agent_client


def call(
    name: str = "get_weather", arguments: str = '{"city": "Paris"}', call_id: str = "c1"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": call_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "m",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def response(*items: dict[str, Any], status: str = "completed") -> Answer:
    body = {"id": "resp_1", "object": "response", "status": status, "model": "m", "output": list(items)}
    return Answer(200, body, {"set-cookie": f"{MODEL_COOKIE}; path=/"})


def inputs(server: ScriptedServer, n: int) -> list[dict[str, Any]]:
    return server.calls_to("/v1/responses")[n].json["input"]


async def test_tool_call_then_final_answer_with_cookies(
    servers: tuple[ScriptedServer, ScriptedServer],
) -> None:
    model, res = servers
    model.on("/v1/responses", [response(call()), response(message("It is cold."))])
    res.on("/seed_session", Answer(200, {}, {"set-cookie": f"{RES_COOKIE}; path=/"}))
    res.on("/get_weather", Answer(200, '{"city":"Paris","weather_description":"cold"}'))
    res.on("/verify", lambda c: Answer(200, {**c.json, "reward": 1.0}))
    row = {"responses_create_params": {"input": "Weather in Paris?", "tools": TOOLS}, "extra": 7}
    async with agent(servers) as client:
        reply = await client.post("/run", json=row)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    tool, verify = res.calls_to("/get_weather")[0], res.calls_to("/verify")[0]
    assert tool.json == {"city": "Paris"}
    assert tool.headers["cookie"] == RES_COOKIE and verify.headers["cookie"] == RES_COOKIE
    first, second = model.calls_to("/v1/responses")
    assert "cookie" not in first.headers and second.headers["cookie"] == MODEL_COOKIE
    assert inputs(model, 1) == [
        {"role": "user", "content": "Weather in Paris?"},
        call(),
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": '{"city":"Paris","weather_description":"cold"}',
        },
    ]
    assert result["reward"] == 1.0 and result["extra"] == 7
    assert [i["type"] for i in result["response"]["output"]] == [
        "function_call",
        "function_call_output",
        "message",
    ]


async def test_max_steps_stops_the_loop(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, res = servers
    model.on("/v1/responses", lambda _: response(call()))
    res.on("/get_weather", Answer(200, "ok"))
    async with agent(servers, max_steps=2) as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    assert len(model.calls_to("/v1/responses")) == 2
    assert [i["type"] for i in out["output"]] == ["function_call", "function_call_output"] * 2


@pytest.mark.parametrize(
    ("bad_call", "expected"),
    [
        (call(arguments="{not json"), "Error: the arguments of get_weather are not valid JSON"),
        (call(arguments="[1, 2]"), "Error: the arguments of get_weather must be a JSON object, got list."),
        (call(name="launch_rocket"), "Error: unknown tool 'launch_rocket'. Available tools: get_weather."),
    ],
)
async def test_bad_tool_calls_become_error_text_for_the_model(
    servers: tuple[ScriptedServer, ScriptedServer], bad_call: dict, expected: str
) -> None:
    model, res = servers
    model.on("/v1/responses", [response(bad_call), response(message("sorry"))])
    res.on("/get_weather", Answer(200, "unused"))
    async with agent(servers) as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    fed_back = inputs(model, 1)[-1]
    assert fed_back["type"] == "function_call_output" and fed_back["output"].startswith(expected)
    assert not res.calls_to("/get_weather") and out["output"][-1]["type"] == "message"


async def test_tool_error_body_is_told_to_the_model(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, res = servers
    model.on("/v1/responses", [response(call()), response(message("ok"))])
    res.on("/get_weather", Answer(400, {"error": {"message": "Invalid 'city'"}}))
    async with agent(servers) as client:
        await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})
    assert (
        inputs(model, 1)[-1]["output"]
        == 'Error: tool get_weather failed with HTTP 400: {"error":{"message":"Invalid \'city\'"}}'
    )


async def test_incomplete_response_stops_the_loop(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, _ = servers
    model.on("/v1/responses", [response(call(), status="incomplete")])
    async with agent(servers) as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    assert len(model.calls_to("/v1/responses")) == 1
    assert out["status"] == "incomplete" and [i["type"] for i in out["output"]] == ["function_call"]


async def test_model_error_is_reported_not_crashed(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    model, _ = servers
    model.on("/v1/responses", Answer(400, {"error": {"message": "bad input"}}))
    async with agent(servers) as client:
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "model server 'policy_model' returned HTTP 400: bad input"
