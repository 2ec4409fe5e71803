"""Streaming through the adapter, with the official `openai` client as the caller: for the same
upstream answer, `client.responses.stream(...)`'s final response equals the non-streaming
response (token fields included), and the chat stream, accumulated, equals the non-streaming
chat answer — across think blocks (inside content, or vLLM's reasoning field), tool calls and cut
generations; plus the edges: context length, a failure mid-stream, a caller hanging up."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from nemo_gym.conversion.chat_stream import ChatAccumulator
from nemo_gym.testing.processes import ng_run, simulator

pytestmark = pytest.mark.e2e
VLLM = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]"
ADAPTER = "+policy_model.responses_api_models.vllm_model"
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CHAT_TOOL = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
WEATHER = "What is the weather in Paris?"
AFTER_TOOL = [
    {"role": "user", "content": WEATHER},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "cold"},
]
CASES = {
    "plain": {"input": "Hello there"},
    "tool_call": {"input": WEATHER, "tools": [TOOL]},
    "after_tool": {"input": AFTER_TOOL, "tools": [TOOL]},
    "cut_in_reasoning": {"input": WEATHER, "tools": [TOOL], "max_output_tokens": 5},
    "cut_in_tool_call": {"input": WEATHER, "tools": [TOOL], "max_output_tokens": 45},
}
# Per-call ids, and the fields the openai client's stream helper adds to what it parsed.
VOLATILE = {"id", "created_at", "call_id", "created", "parsed", "parsed_arguments"}


@pytest.fixture(scope="module", params=["think_in_content+token_mode", "reasoning_parser"])
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, bool]]:
    token_mode = request.param.endswith("token_mode")
    sim_args = () if token_mode else ("--reasoning-parser",)
    with simulator(*sim_args) as (sim_url, _):
        with ng_run(
            VLLM,
            f"+policy_base_url={sim_url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            f"{ADAPTER}.return_token_id_information={str(token_mode).lower()}",
        ) as run:
            yield run.url_of("policy_model"), sim_url, token_mode


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


@pytest.mark.parametrize("case", sorted(CASES))
def test_responses_stream_final_equals_the_unstreamed_response(stack, case: str) -> None:
    url, _, token_mode = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY")
    whole = client.responses.create(model="sim-model", **CASES[case]).model_dump()
    with client.responses.stream(model="sim-model", **CASES[case]) as stream:
        events = list(stream)
        if whole["status"] == "completed":
            assert without_volatile(stream.get_final_response().model_dump()) == without_volatile(whole)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    # openai's helper only finishes on response.completed; a cut answer ends in response.incomplete
    assert kinds[-1] == ("response.incomplete" if whole["status"] == "incomplete" else "response.completed")
    final = events[-1].response.model_dump()
    assert without_volatile(final) == without_volatile(whole)
    last = final["output"][-1]
    assert ("generation_token_ids" in last) is token_mode
    if token_mode:
        assert len(last["generation_token_ids"]) == len(last["generation_log_probs"]) > 0
    if case == "tool_call":
        assert [item["type"] for item in final["output"]][-1] == "function_call"
        assert "response.function_call_arguments.delta" in kinds
        assert "response.reasoning_summary_text.delta" in kinds


@pytest.mark.parametrize("case", ["plain", "tool_call", "cut_in_reasoning"])
def test_chat_stream_accumulated_equals_the_unstreamed_answer(stack, case: str) -> None:
    url, _, token_mode = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY")
    body: dict[str, Any] = {"messages": [{"role": "user", "content": CASES[case]["input"]}]}
    if "tools" in CASES[case]:
        body["tools"] = [CHAT_TOOL]
    if "max_output_tokens" in CASES[case]:
        body["max_tokens"] = CASES[case]["max_output_tokens"]
    whole = client.chat.completions.create(model="sim-model", **body).to_dict()
    accumulator = ChatAccumulator()
    for chunk in client.chat.completions.create(model="sim-model", stream=True, **body):
        accumulator.add(chunk.to_dict())
    streamed = accumulator.result()
    message, streamed_message = whole["choices"][0]["message"], streamed["choices"][0]["message"]
    assert (streamed_message.get("content") or None) == (message.get("content") or None)
    assert [
        (c["function"]["name"], c["function"]["arguments"]) for c in streamed_message.get("tool_calls") or []
    ] == [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    assert streamed["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    for key in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
        assert (streamed_message.get(key), key in message) == (message.get(key), token_mode)


def test_context_length_is_the_empty_result_as_a_stream(stack) -> None:
    url, _, _ = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY")
    whole = client.responses.create(model="sim-model", input="word " * 5000).model_dump()
    with client.responses.stream(model="sim-model", input="word " * 5000) as stream:
        final = list(stream)[-1].response.model_dump()
    assert without_volatile(final) == without_volatile(whole)
    assert final["status"] == "incomplete" and final["output"][0]["content"][0]["text"] == ""
    chunks = list(
        client.chat.completions.create(
            model="sim-model", stream=True, messages=[{"role": "user", "content": "word " * 5000}]
        )
    )
    assert [(c.choices[0].delta.content, c.choices[0].finish_reason) for c in chunks] == [
        (None, None),
        (None, "length"),
    ]


def test_a_failure_mid_stream_is_an_error_event(stack) -> None:
    url, sim_url, _ = stack
    sim = sim_url.removesuffix("/v1")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY", max_retries=0)
    httpx.post(f"{sim}/sim/faults", json={"mode": "truncate", "count": 1})
    with client.responses.stream(model="sim-model", input="Hello there, a long answer please") as stream:
        kinds = [event.type for event in stream if event.type in ("error", "response.failed")]
    assert kinds == ["error", "response.failed"]
    httpx.post(f"{sim}/sim/faults", json={"mode": "truncate", "count": 1})
    with pytest.raises(openai.APIError, match="failed mid-response"):
        for _ in client.chat.completions.create(
            model="sim-model", stream=True, messages=[{"role": "user", "content": "Hello there"}]
        ):
            pass


def test_hanging_up_mid_stream_cancels_the_upstream() -> None:
    with simulator("--per-token-ms", "50") as (sim_url, _):
        with ng_run(
            VLLM, f"+policy_base_url={sim_url}", "+policy_api_key=EMPTY", "+policy_model_name=sim-model"
        ) as run:
            url, sim = run.url_of("policy_model"), sim_url.removesuffix("/v1")
            host, port = url.removeprefix("http://").split(":")
            payload = json.dumps({"input": "Hello there " * 20, "stream": True}).encode()
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
                )
                assert b"response.created" in sock.recv(65536)
                assert httpx.get(f"{sim}/sim/stats").json()["in_flight"] == 1  # the generation runs
            hung_up = time.monotonic()
            while httpx.get(f"{sim}/sim/stats").json()["in_flight"] and time.monotonic() - hung_up < 5:
                time.sleep(0.02)
            # The answer takes 60+ tokens x 50 ms; the upstream stopped within a token or two of the hang-up.
            assert time.monotonic() - hung_up < 0.5
            assert httpx.get(f"{sim}/sim/stats").json()["requests"] == 1
            text = httpx.get(f"{url}/metrics").text
            assert 'nemo_gym_requests_cancelled_total{route="/v1/responses"} 1.0' in text.splitlines()
