"""The agent loop against respx-mocked model and resources servers."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx

from nemo_gym.server.context import RuntimeContext
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig

MODEL = "http://model.test:1"
RES = "http://res.test:2"
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
GLOBAL = {
    "policy_model": {"responses_api_models": {"vllm_model": {"host": "model.test", "port": 1}}},
    "simple_weather": {"resources_servers": {"simple_weather": {"host": "res.test", "port": 2}}},
}


def agent(max_steps: int | None = None) -> httpx.AsyncClient:
    config = SimpleAgentConfig(
        resources_server={"type": "resources_servers", "name": "simple_weather"},
        model_server={"type": "responses_api_models", "name": "policy_model"},
        max_steps=max_steps,
    )
    context = RuntimeContext(global_config=GLOBAL, origins={}, instance_name="agent", session_secret="s")
    app = SimpleAgent(config, context).setup_webserver()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")


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


def response(*items: dict[str, Any], status: str = "completed") -> httpx.Response:
    body = {"id": "resp_1", "object": "response", "status": status, "model": "m", "output": list(items)}
    return httpx.Response(
        200, json=body, headers={"set-cookie": "VLLMModel___policy_model=sess-1.sig; path=/"}
    )


@pytest.fixture
def mock() -> respx.MockRouter:
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.route(host="agent").pass_through()
        yield router


def inputs(route: respx.Route, n: int) -> list[dict[str, Any]]:
    return orjson.loads(route.calls[n].request.content)["input"]


async def test_tool_call_then_final_answer_with_cookies(mock: respx.MockRouter) -> None:
    model = mock.post(f"{MODEL}/v1/responses").mock(
        side_effect=[response(call()), response(message("It is cold."))]
    )
    seed = mock.post(f"{RES}/seed_session").respond(
        200, json={}, headers={"set-cookie": "SimpleWeather___simple_weather=res-1.sig; path=/"}
    )
    tool = mock.post(f"{RES}/get_weather").respond(200, text='{"city":"Paris","weather_description":"cold"}')
    verify = mock.post(f"{RES}/verify").mock(
        side_effect=lambda request: httpx.Response(200, json={**orjson.loads(request.content), "reward": 1.0})
    )
    row = {"responses_create_params": {"input": "Weather in Paris?", "tools": TOOLS}, "extra": 7}
    async with agent() as client:
        result = (await client.post("/run", json=row)).json()
    assert seed.called and orjson.loads(tool.calls[0].request.content) == {"city": "Paris"}
    assert tool.calls[0].request.headers["cookie"] == "SimpleWeather___simple_weather=res-1.sig"
    assert verify.calls[0].request.headers["cookie"] == "SimpleWeather___simple_weather=res-1.sig"
    assert "cookie" not in model.calls[0].request.headers
    assert model.calls[1].request.headers["cookie"] == "VLLMModel___policy_model=sess-1.sig"
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


async def test_max_steps_stops_the_loop(mock: respx.MockRouter) -> None:
    model = mock.post(f"{MODEL}/v1/responses").mock(side_effect=lambda _: response(call()))
    mock.post(f"{RES}/get_weather").respond(200, text="ok")
    async with agent(max_steps=2) as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    assert model.call_count == 2
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
    mock: respx.MockRouter, bad_call: dict, expected: str
) -> None:
    model = mock.post(f"{MODEL}/v1/responses").mock(
        side_effect=[response(bad_call), response(message("sorry"))]
    )
    tool = mock.post(f"{RES}/get_weather").respond(200, text="unused")
    async with agent() as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    fed_back = inputs(model, 1)[-1]
    assert fed_back["type"] == "function_call_output" and fed_back["output"].startswith(expected)
    assert not tool.called and out["output"][-1]["type"] == "message"


async def test_tool_error_body_is_told_to_the_model(mock: respx.MockRouter) -> None:
    model = mock.post(f"{MODEL}/v1/responses").mock(side_effect=[response(call()), response(message("ok"))])
    mock.post(f"{RES}/get_weather").respond(400, json={"error": {"message": "Invalid 'city'"}})
    async with agent() as client:
        await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})
    assert (
        inputs(model, 1)[-1]["output"]
        == 'Error: tool get_weather failed with HTTP 400: {"error":{"message":"Invalid \'city\'"}}'
    )


async def test_incomplete_response_stops_the_loop(mock: respx.MockRouter) -> None:
    model = mock.post(f"{MODEL}/v1/responses").mock(side_effect=[response(call(), status="incomplete")])
    async with agent() as client:
        out = (await client.post("/v1/responses", json={"input": "x", "tools": TOOLS})).json()
    assert (
        model.call_count == 1
        and out["status"] == "incomplete"
        and [i["type"] for i in out["output"]] == ["function_call"]
    )


async def test_model_error_is_reported_not_crashed(mock: respx.MockRouter) -> None:
    mock.post(f"{MODEL}/v1/responses").respond(400, json={"error": {"message": "bad input"}})
    async with agent() as client:
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "model server 'policy_model' returned HTTP 400: bad input"
