"""nemo_gym.openai_utils: validation of real vLLM bodies, item routing, usage, the HTTP client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from nemo_gym import openai_utils as ou
from nemo_gym.http.server_client import close_shared_client

WIRE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_wire"


def _load(name: str) -> dict:
    return json.loads((WIRE / name).read_text())


def test_real_vllm_response_validates():
    body = _load("responses_basic.json")
    response = ou.NeMoGymResponse.model_validate(body)
    assert [type(i) for i in response.output] == [ou.NeMoGymResponseOutputMessage]
    assert response.output[-1].content[0].text == body["output"][0]["content"][0]["text"]
    assert response.usage.input_tokens == 15
    assert response.usage.output_tokens == 8
    assert response.usage.total_tokens == 23
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_real_vllm_reasoning_and_tool_calls():
    reasoning = ou.NeMoGymResponse.model_validate(_load("reasoning_r1_responses.json"))
    assert [type(i) for i in reasoning.output] == [
        ou.NeMoGymResponseReasoningItem,
        ou.NeMoGymResponseOutputMessage,
    ]
    assert isinstance(reasoning.output[0].summary, list)
    tools = ou.NeMoGymResponse.model_validate(_load("responses_tools_required_strict.json"))
    assert [type(i) for i in tools.output] == [ou.NeMoGymResponseFunctionToolCall] * 2
    assert all(isinstance(call.arguments, str) and call.call_id for call in tools.output)


def test_real_vllm_chat_completion_validates():
    body = _load("chat_basic.json")
    completion = ou.NeMoGymChatCompletion.model_validate(body)
    assert completion.choices[0].message.content == body["choices"][0]["message"]["content"]
    assert type(completion.choices[0].message) is ou.NeMoGymChatCompletionMessage


def test_chat_message_with_token_ids_is_training_variant():
    body = _load("chat_basic.json")
    body["choices"][0]["message"] |= {
        "prompt_token_ids": [1, 2],
        "generation_token_ids": [3],
        "generation_log_probs": [-0.5],
    }
    message = ou.NeMoGymChatCompletion.model_validate(body).choices[0].message
    assert type(message) is ou.NeMoGymChatCompletionMessageForTraining
    assert message.generation_log_probs == [-0.5]


def test_easy_input_message_dump():
    message = ou.NeMoGymEasyInputMessage(role="user", content="What is 2+2?")
    assert message.model_dump() == {
        "content": "What is 2+2?",
        "role": "user",
        "type": "message",
        "phase": None,
    }


def test_create_params_route_each_item_to_its_model():
    params = ou.NeMoGymResponseCreateParamsNonStreaming(
        input=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
                "status": "completed",
                "type": "message",
            },
            {
                "id": "msg_1",
                "role": "assistant",
                "type": "message",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
    )
    assert [type(i) for i in params.input] == [
        ou.NeMoGymEasyInputMessage,
        ou.NeMoGymEasyInputMessage,
        ou.NeMoGymMessage,
        ou.NeMoGymResponseOutputMessage,
        ou.NeMoGymResponseReasoningItem,
        ou.NeMoGymResponseFunctionToolCall,
        ou.NeMoGymFunctionCallOutput,
    ]
    assert params.input[3].content[0].text == "hello"
    assert params.parallel_tool_calls is True
    assert params.tool_choice == "auto"


def test_create_params_string_input_and_defaults():
    params = ou.NeMoGymResponseCreateParamsNonStreaming(input="hello", temperature=0.5)
    assert params.input == "hello"
    assert params.tools == []
    assert params.model_dump(exclude_unset=True) == {"input": "hello", "temperature": 0.5}


def test_create_params_rejects_unknown_field():
    with pytest.raises(ValidationError):
        ou.NeMoGymResponseCreateParamsNonStreaming(input="x", not_a_field=1)


def test_training_variant_selected_by_token_metadata():
    tokens = {
        "prompt_token_ids": [1, 2, 3],
        "generation_token_ids": [4, 5],
        "generation_log_probs": [-0.1, -0.2],
    }
    params = ou.NeMoGymResponseCreateParamsNonStreaming(
        input=[
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a", "annotations": []}],
                **tokens,
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", **tokens},
        ]
    )
    assert type(params.input[0]) is ou.NeMoGymResponseOutputMessageForTraining
    assert type(params.input[1]) is ou.NeMoGymResponseFunctionToolCallForTraining
    assert params.input[0].generation_token_ids == [4, 5]
    assert (
        ou.RESPONSES_TO_TRAIN[ou.NeMoGymResponseOutputMessage] is ou.NeMoGymResponseOutputMessageForTraining
    )


def test_partial_token_metadata_is_rejected():
    with pytest.raises(ValidationError, match="generation_log_probs"):
        ou.NeMoGymResponseCreateParamsNonStreaming(
            input=[
                {
                    "type": "function_call",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "{}",
                    "prompt_token_ids": [1],
                    "generation_token_ids": [2],
                }
            ]
        )


def test_output_item_without_type_is_rejected():
    body = _load("responses_basic.json")
    del body["output"][0]["type"]
    with pytest.raises(ValidationError):
        ou.NeMoGymResponse.model_validate(body)


def test_model_instances_are_accepted_in_input():
    message = ou.NeMoGymEasyInputMessage(role="user", content="q")
    call = ou.NeMoGymResponseFunctionToolCall(call_id="c", name="f", arguments="{}")
    params = ou.NeMoGymResponseCreateParamsNonStreaming(input=[message, call])
    assert [type(i) for i in params.input] == [ou.NeMoGymEasyInputMessage, ou.NeMoGymResponseFunctionToolCall]


def _usage(i: int, o: int, cached: int | None, reasoning: int | None) -> ou.NeMoGymResponseUsage:
    return ou.NeMoGymResponseUsage(
        input_tokens=i,
        output_tokens=o,
        total_tokens=i + o,
        input_tokens_details=ou.NeMoGymResponseInputTokensDetails(cached_tokens=cached),
        output_tokens_details=ou.NeMoGymResponseOutputTokensDetails(reasoning_tokens=reasoning),
    )


def test_accumulate_response_usage():
    a, b = _usage(10, 5, 2, 1), _usage(7, 3, 4, None)
    total = ou.accumulate_response_usage(a, b)
    assert (total.input_tokens, total.output_tokens, total.total_tokens) == (17, 8, 25)
    assert total.input_tokens_details.cached_tokens == 6
    assert total.output_tokens_details.reasoning_tokens is None
    assert a.input_tokens == 10  # inputs untouched
    assert ou.accumulate_response_usage(None, None) is None
    assert ou.accumulate_response_usage(a, None) is a
    copy = ou.accumulate_response_usage(None, a)
    assert copy == a and copy is not a
    summed = ou.NeMoGymResponseUsage.sum_from_list([a, _usage(1, 1, 1, 1)])
    assert (summed.input_tokens, summed.total_tokens, summed.output_tokens_details.reasoning_tokens) == (
        11,
        17,
        2,
    )


def test_chat_create_params():
    params = ou.NeMoGymChatCompletionCreateParamsNonStreaming(
        messages=[
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "u"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "r"},
        ],
        chat_template_kwargs={"enable_thinking": False},
    )
    assert [m["role"] for m in params.messages] == ["system", "user", "assistant", "tool"]
    with pytest.raises(ValidationError):
        ou.NeMoGymChatCompletionCreateParamsNonStreaming(messages=[], bogus=True)


def test_error_code_lists():
    assert ou.RATE_LIMIT_ERROR_CODES == [429, 502, 503, 504, 520]
    assert ou.RETRY_ERROR_CODES == [429, 502, 503, 504, 520, 404, 408, 500]


@pytest.fixture
async def fake_endpoint():
    state = {"calls": 0, "statuses": [], "auth": []}

    async def responses(request: web.Request) -> web.Response:
        state["calls"] += 1
        state["auth"].append(request.headers.get("Authorization"))
        status = state["statuses"].pop(0) if state["statuses"] else 200
        if status == 200:
            return web.json_response({"id": "r", "echo": await request.json()})
        if status == 401:
            return web.json_response({"error": {"code": "invalid_api_key"}}, status=401)
        return web.json_response({"error": "busy"}, status=status)

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server, state
    await close_shared_client()
    await server.close()


async def test_async_openai_retries_then_succeeds(fake_endpoint):
    server, state = fake_endpoint
    state["statuses"] = [503, 502]
    client = ou.NeMoGymAsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", retry_sleep_seconds=0)
    result = await client.create_response(input="hi")
    assert result == {"id": "r", "echo": {"input": "hi"}}
    assert state["calls"] == 3
    assert state["auth"] == ["Bearer k"] * 3


async def test_async_openai_gives_up_after_max_attempts(fake_endpoint):
    server, state = fake_endpoint
    state["statuses"] = [503] * 5
    client = ou.NeMoGymAsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="k", max_http_attempts=2, retry_sleep_seconds=0
    )
    with pytest.raises(Exception) as info:
        await client.create_response(input="hi")
    assert getattr(info.value, "status", None) == 503
    assert state["calls"] == 2


async def test_async_openai_permanent_auth_error_trips(fake_endpoint):
    server, state = fake_endpoint
    state["statuses"] = [401]
    client = ou.NeMoGymAsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="bad", retry_sleep_seconds=0)
    with pytest.raises(ou.PermanentEndpointError):
        await client.create_response(input="hi")
    with pytest.raises(ou.PermanentEndpointError):
        await client.create_response(input="again")
    assert state["calls"] == 1


def test_response_round_trips_through_a_field_name_dump():
    """`NeMoGymResponse(**r.model_dump())` equals `r` although openai names `async_` by alias."""
    from nemo_gym.openai_utils import NeMoGymResponse

    response = NeMoGymResponse(
        id="r",
        created_at=1.0,
        model="m",
        object="response",
        output=[],
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "async": True}],
        text={"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
    )
    dumped = response.model_dump()
    assert dumped["tools"][0]["async_"] is True and "async" not in dumped["tools"][0]
    copy = NeMoGymResponse(**dumped)
    assert copy == response
    assert copy.tools[0].async_ is True and copy.tools[0].model_extra == {}
    assert copy.text.format.schema_ == {"type": "object"}
