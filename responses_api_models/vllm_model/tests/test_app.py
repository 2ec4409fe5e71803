"""The adapter server with mocked upstreams: exact upstream bodies, routing, tokens, errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from nemo_gym.testing.mock_upstream import MockUpstreams
from nemo_gym.upstream.transport.mock import MockResponse
from responses_api_models.vllm_model.tests.conftest import UP1, UP2, adapter, chat_body, sent

WIRE = (
    Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
)  # copied from shared/vllm_wire
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


async def test_responses_sends_exact_chat_body_and_returns_response(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").respond(200, json=chat_body("<think>r</think>Sunny."))
    async with adapter(upstream) as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "x", "input": "Weather?", "instructions": "Be short.", "max_output_tokens": 30},
        )
    assert r.status_code == 200
    assert sent(route) == {
        "model": "served-model",
        "messages": [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Weather?"}],
        "max_tokens": 30,
    }
    assert route.calls[0].headers["authorization"] == "Bearer sk-test-key"
    body = r.json()
    assert [i["type"] for i in body["output"]] == ["reasoning", "message"]
    assert body["output"][1]["content"][0]["text"] == "Sunny."
    assert (
        body["model"] == "served-model"
        and body["instructions"] == "Be short."
        and body["max_output_tokens"] == 30
    )


async def test_token_mode_asks_tokenize_when_the_upstream_returns_no_prompt_ids(
    upstream: MockUpstreams,
) -> None:
    """A vLLM without `return_token_ids` (this capture's answer has no prompt_token_ids): the prompt
    ids come from its /tokenize, sent exactly the messages, tools and template kwargs rendered."""
    captured = orjson.loads(wire("chat_logprobs_tokenids.json"))
    assert captured.get("prompt_token_ids") is None
    chat = upstream.post(f"{UP1}/chat/completions").respond(200, json=captured)
    tokenize = upstream.post("http://up1:8000/tokenize").respond(200, content=wire("tokenize_messages.json"))
    request = {
        "input": [{"role": "user", "content": "Hello, what is the weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "top_logprobs": None,
    }
    async with adapter(
        upstream, return_token_id_information=True, chat_template_kwargs={"enable_thinking": False}
    ) as client:
        r = await client.post("/v1/responses", json=request)
    assert r.status_code == 200, r.text
    chat_sent = sent(chat)
    assert (chat_sent["logprobs"], chat_sent["top_logprobs"], chat_sent["return_tokens_as_token_ids"]) == (
        True,
        0,
        True,
    )
    assert chat_sent["return_token_ids"] is True  # asked inline first: vLLM's own ids when it has them
    assert sent(tokenize) == {
        "model": "served-model",
        "messages": [{"role": "user", "content": "Hello, what is the weather in Paris?"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": WEATHER_TOOL["parameters"]},
            }
        ],
        "chat_template_kwargs": {"enable_thinking": False},
    }
    last = r.json()["output"][-1]
    assert last["prompt_token_ids"] == orjson.loads(wire("tokenize_messages.json"))["tokens"]
    assert last["generation_token_ids"] == [750, 559, 1259, 1358]
    assert last["generation_log_probs"] == [
        e["logprob"] for e in captured["choices"][0]["logprobs"]["content"]
    ]


@pytest.mark.parametrize("flag", [True, False])
async def test_token_mode_inline_ids(upstream: MockUpstreams, flag: bool) -> None:
    """vLLM's own prompt ids, whatever request_prompt_and_generation_token_ids says (NeMo Gym's key
    is accepted; no /tokenize when the answer carries them)."""
    captured = orjson.loads(wire("chat_return_token_ids.json"))
    ids = captured["choices"][0]["token_ids"]
    captured["choices"][0]["logprobs"] = {
        "content": [{"token": f"token_id:{i}", "logprob": -1.0, "bytes": [], "top_logprobs": []} for i in ids]
    }
    chat = upstream.post(f"{UP1}/chat/completions").respond(200, json=captured)
    tokenize = upstream.post("http://up1:8000/tokenize").respond(500)
    async with adapter(
        upstream, return_token_id_information=True, request_prompt_and_generation_token_ids=flag
    ) as client:
        r = await client.post("/v1/responses", json={"input": "Hello"})
    assert r.status_code == 200, r.text
    assert sent(chat)["return_token_ids"] is True and tokenize.calls == []
    last = r.json()["output"][-1]
    assert last["prompt_token_ids"] == captured["prompt_token_ids"]
    assert last["generation_token_ids"] == ids and last["generation_log_probs"] == [-1.0] * len(ids)


async def test_sessions_round_robin_then_sticky(upstream: MockUpstreams) -> None:
    r1 = upstream.post(f"{UP1}/chat/completions").respond(200, json=chat_body("one"))
    r2 = upstream.post(f"{UP2}/chat/completions").respond(200, json=chat_body("two"))
    async with adapter(upstream, base_url=[UP1, UP2]) as a:
        transport = a._transport
        clients = [httpx.AsyncClient(transport=transport, base_url="http://adapter") for _ in range(3)]
        order = []
        for c in clients:
            await c.get("/health")  # takes no routing turn
            out = (await c.post("/v1/responses", json={"input": "q"})).json()
            order.append(out["output"][0]["content"][0]["text"])
        assert order == ["one", "two", "one"]
        for _ in range(2):
            again = [
                (await c.post("/v1/responses", json={"input": "q"})).json()["output"][0]["content"][0]["text"]
                for c in clients
            ]
            assert again == ["one", "two", "one"]
        for c in clients:
            await c.aclose()
    assert (r1.call_count, r2.call_count) == (6, 3)


async def test_failover_off_a_dead_upstream(upstream: MockUpstreams) -> None:
    upstream.refuse(UP1)
    alive = upstream.post(f"{UP2}/chat/completions").respond(200, json=chat_body("alive"))
    async with adapter(upstream, base_url=[UP1, UP2]) as client:
        r = await client.post("/v1/responses", json={"input": "q"})
        assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == "alive"
        r = await client.post("/v1/responses", json={"input": "q"})  # the session is now pinned to UP2
        assert r.status_code == 200
    assert upstream.transport.refusals == {"up1:8000": 1} and alive.call_count == 2


async def test_context_length_both_wordings_give_empty_result(upstream: MockUpstreams) -> None:
    older = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    for body in (
        wire("err_prompt_too_long.json"),
        orjson.dumps(older),
        wire("err_prompt256_equals_max_model_len.json"),
    ):
        upstream.post(f"{UP1}/chat/completions").respond(400, content=body)
        async with adapter(upstream, return_token_id_information=True) as client:
            upstream.post("http://up1:8000/tokenize").respond(200, content=wire("tokenize_messages.json"))
            r = await client.post("/v1/responses", json={"input": "long"})
            chat = await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "long"}]}
            )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
        assert len(out["output"]) == 1 and out["output"][0]["content"][0]["text"] == ""
        assert "prompt_token_ids" not in out["output"][0]
        assert chat.status_code == 200
        assert chat.json()["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ]


async def test_max_tokens_zero_with_caller_max_tokens_is_an_error(upstream: MockUpstreams) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(
        400, content=wire("err_prompt256_equals_max_model_len.json")
    )
    async with adapter(upstream) as client:
        r = await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 0})
    assert r.status_code == 400


async def test_unrelated_400_is_returned_as_400(upstream: MockUpstreams) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(400, content=wire("err_max_tokens_too_large.json"))
    async with adapter(upstream) as client:
        r = await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 1000})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "max_tokens=1000 cannot be greater than max_model_len=256. Please request fewer output tokens. (parameter=max_tokens, value=1000)",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": 400,
        }
    }


async def test_upstream_404_and_401_keep_status_and_message(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions")
    async with adapter(upstream) as client:
        route.respond(404, content=wire("err_unknown_model.json"))
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and r.json()["error"]["message"].startswith(
            "The model `no-such-model` does not exist"
        )
        route.respond(401, json={"error": "Unauthorized"})
        r = await client.post("/v1/responses", json={"input": "x"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "Unauthorized"
        assert "sk-test-key" not in r.text


async def test_503_is_retried_then_reported_naming_upstream(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").mock(
        side_effect=[MockResponse(503, text="busy"), MockResponse(200, json=chat_body("ok"))]
    )
    async with adapter(upstream, max_retries=2) as client:
        assert (await client.post("/v1/responses", json={"input": "x"})).status_code == 200
        assert route.call_count == 2
        route.mock(side_effect=None).respond(503, text="busy")
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 503
    assert UP1 in r.json()["error"]["message"] and "sk-test-key" not in r.text


async def test_malformed_upstream_json_is_502(upstream: MockUpstreams) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(200, content=b'{"choices": [')
    async with adapter(upstream) as client:
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 502 and "malformed JSON" in r.json()["error"]["message"]


async def test_reasoning_parser_misconfiguration(upstream: MockUpstreams) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(200, content=wire("reasoning_r1_chat.json"))
    async with adapter(upstream, uses_reasoning_parser=False) as client:
        r = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 502 and "--reasoning-parser" in r.json()["error"]["message"]


async def test_real_vllm_reasoning_capture_becomes_reasoning_item(upstream: MockUpstreams) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(200, content=wire("reasoning_r1_chat.json"))
    async with adapter(upstream) as client:
        out = (await client.post("/v1/responses", json={"input": "x"})).json()
    assert out["output"][0]["summary"] == [
        {"type": "summary_text", "text": "earread 160json 36Servertomorrow"}
    ]
    assert out["status"] == "incomplete"


async def test_bad_requests_are_openai_style_400(upstream: MockUpstreams) -> None:
    async with adapter(upstream) as client:
        r = await client.post(
            "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await client.post("/v1/responses", json={"input": [{"type": "computer_call"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].type"
        r = await client.post("/v1/chat/completions", json={"messages": "hi"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


async def test_chat_endpoint_passes_vllm_extras_and_maps_developer(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").respond(
        200,
        json=chat_body(
            "T",
            reasoning_content=None,
            choice={"message": {"role": "assistant", "content": "T", "reasoning": "R"}},
        ),
    )
    body = {
        "model": "whatever",
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "assistant", "content": "<think>old</think>answer"},
            {"role": "user", "content": "u"},
        ],
        "top_k": 5,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
    }
    async with adapter(
        upstream,
        replace_developer_role_with_system=True,
        sampling_overrides={"temperature": 1.0},
        extra_body={"top_k": 1, "seed": 7},
    ) as client:
        r = await client.post("/v1/chat/completions", json=body)
    assert sent(route) == {
        "top_k": 5,
        "seed": 7,
        "model": "served-model",
        "messages": [
            {"role": "system", "content": "d"},
            {"role": "assistant", "content": "answer", "reasoning": "old", "reasoning_content": "old"},
            {"role": "user", "content": "u"},
        ],
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "temperature": 1.0,
    }
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "<think>R</think>T"}


async def test_health_with_upstream(upstream: MockUpstreams) -> None:
    upstream.get("http://up1:8000/health").respond(200)
    upstream.get("http://up2:8000/health").respond(503)
    async with adapter(upstream, base_url=f"{UP1}, {UP2}") as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        r = await client.get("/health?upstream=true")
    assert r.status_code == 200
    assert r.json() == {
        "status": "degraded",
        "upstreams": [
            {"url": UP1, "status": "healthy", "routed": True},
            {"url": UP2, "status": "unhealthy", "error": "HTTP 503", "routed": True},
        ],
    }
