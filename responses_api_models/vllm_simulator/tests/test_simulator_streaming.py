"""The simulator streams like vLLM: the `openai` client parses its stream, the stream adds up to
the simulator's non-streaming answer, and its Responses conversion equals the non-streaming one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from nemo_gym.conversion.chat_stream import ChatAccumulator, ChatStream
from nemo_gym.conversion.chat_to_responses import chat_completion_for_caller, chat_to_response, first_choice
from nemo_gym.conversion.errors import UpstreamFormatError
from nemo_gym.conversion.responses_stream import ResponsesStream
from nemo_gym.conversion.sse import DONE_BYTES, ChunkReader, SSEParser, encode_chunks, iter_events
from nemo_gym.conversion.tokens import generation_tokens
from nemo_gym.testing.checks import (
    check_events,
    openai_client_streaming,
    shape_diff,
    strip_parsed,
    through_openai_client,
)
from nemo_gym.testing.processes import simulator

pytestmark = pytest.mark.e2e
WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
AFTER_TOOL = [
    *WEATHER,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "cold"},
]
TOKENS = {"logprobs": True, "top_logprobs": 0, "return_tokens_as_token_ids": True, "return_token_ids": True}
CASES = {
    "plain": {"messages": [{"role": "user", "content": "Hello there"}]},
    "tool_call": {"messages": WEATHER, "tools": [TOOL]},
    "after_tool": {"messages": AFTER_TOOL, "tools": [TOOL]},
    "cut_in_reasoning": {"messages": WEATHER, "tools": [TOOL], "max_tokens": 5},
    "cut_in_tool_call": {"messages": WEATHER, "tools": [TOOL], "max_tokens": 45},
}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, str]]:
    with simulator() as (plain, _), simulator("--reasoning-parser") as (parser, _):
        yield {"plain": plain, "parser": parser}


def streamed_chunks(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream as the openai client reads it, back to dicts (extra fields included)."""
    client = openai.OpenAI(base_url=url, api_key="EMPTY")
    extra = {k: v for k, v in body.items() if k in ("return_tokens_as_token_ids", "return_token_ids")}
    known = {k: v for k, v in body.items() if k not in extra}
    stream = client.chat.completions.create(
        model="sim-model", stream=True, stream_options={"include_usage": True}, extra_body=extra, **known
    )
    return [chunk.to_dict() for chunk in stream]


def unstreamed(url: str, body: dict[str, Any]) -> dict[str, Any]:
    return httpx.post(f"{url}/chat/completions", json={"model": "sim-model", **body}, timeout=30).json()


def comparable(chat: dict[str, Any]) -> dict[str, Any]:
    choice = first_choice(chat)
    message = choice["message"]
    return {
        "content": message.get("content") or None,  # vLLM streams "" where it answers null
        "reasoning": message.get("reasoning") or None,
        "tool_calls": [
            (call["type"], call["function"]["name"], call["function"]["arguments"])
            for call in message.get("tool_calls") or []
        ],
        "finish_reason": choice["finish_reason"],
        "logprobs": choice["logprobs"],
        "token_ids": choice.get("token_ids"),
        "prompt_token_ids": chat.get("prompt_token_ids"),
        "usage": {k: v for k, v in (chat.get("usage") or {}).items() if v is not None},
        "model": chat["model"],
    }


@pytest.mark.parametrize("sim", ["plain", "parser"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_openai_client_stream_adds_up_to_the_unstreamed_answer(
    sims: dict[str, str], sim: str, case: str
) -> None:
    body = {**CASES[case], **TOKENS}
    chunks = streamed_chunks(sims[sim], body)
    accumulator = ChatAccumulator()
    for chunk in chunks:
        accumulator.add(chunk)
    streamed = accumulator.result()
    whole = unstreamed(sims[sim], body)
    assert comparable(streamed) == comparable(whole)
    assert len(chunks) == len(whole["choices"][0]["token_ids"]) + 2  # role chunk, one per token, usage
    message = streamed["choices"][0]["message"]
    if case == "tool_call":
        assert [c["id"][:14] for c in message["tool_calls"]] == ["chatcmpl-tool-"]
        assert ("reasoning" in message) is (sim == "parser")
    if case == "cut_in_tool_call":
        assert "<tool_call>" in message["content"] and "tool_calls" not in message


def test_stream_shapes_match_vllm_capture(sims: dict[str, str]) -> None:
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, **TOKENS, "top_logprobs": 1}
    raw = httpx.post(
        f"{sims['plain']}/chat/completions",
        json={"model": "sim-model", "stream": True, "stream_options": {"include_usage": True}, **body},
    )
    assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
    ours = [e.json() for e in iter_events([raw.content]) if not e.done]
    capture = (WIRE / "chat_stream_usage_logprobs_tokenids.sse").read_bytes()
    real = [e.json() for e in iter_events([capture]) if not e.done]
    assert raw.content.endswith(b"data: [DONE]\n\n")
    assert len(ours) == len(real) == 5
    for mine, theirs in zip(ours, real, strict=True):
        for choice in mine["choices"] + theirs["choices"]:
            # the text differs (random weights there): which delta keys appear depends on it
            assert set(choice.pop("delta")) <= {"role", "content"}
        assert shape_diff(theirs, mine) == []


def test_textless_tokens_stream_only_with_return_token_ids(sims: dict[str, str]) -> None:
    """vLLM skips the chunk of a token that adds no text (here `<think>`, `</think>` and tool-call
    markup under the parsers) unless return_token_ids is set: its log-prob never arrives."""
    body = {**CASES["tool_call"], "logprobs": True, "top_logprobs": 0, "return_tokens_as_token_ids": True}
    streamed = ChatAccumulator()
    for chunk in streamed_chunks(sims["parser"], body):
        streamed.add(chunk)
    entries = streamed.choice0()["logprobs"]["content"]
    full = unstreamed(sims["parser"], body)["choices"][0]["logprobs"]["content"]
    tokens = [e["token"] for e in entries]
    assert len(entries) < len(full)
    assert "token_id:1668" not in tokens and "token_id:1669" not in tokens
    remaining = iter(full)
    assert all(any(entry == other for other in remaining) for entry in entries)  # an ordered subsequence
    assert tokens[-1] == "token_id:1667"  # the finishing token always has its chunk
    with pytest.raises(UpstreamFormatError, match="unless the request sets return_token_ids: true"):
        streamed.token_info([1])


def test_time_to_first_byte_with_per_token_latency() -> None:
    with simulator("--latency-ms", "100", "--per-token-ms", "10") as (url, _):
        client = openai.OpenAI(base_url=url, api_key="EMPTY")
        client.models.list()  # connect first: measure the stream, not the connection
        start = time.monotonic()
        stream = client.chat.completions.create(
            model="sim-model", messages=WEATHER, tools=[TOOL], stream=True
        )
        first = None
        count = 0
        for _ in stream:
            first = first if first is not None else time.monotonic() - start
            count += 1
        total = time.monotonic() - start
    assert first is not None and count > 20
    assert first >= 0.1
    assert total >= 0.1 + 0.01 * (count - 1)
    assert total - first >= 0.01 * (count - 2) * 0.9


def test_stream_faults(sims: dict[str, str]) -> None:
    url = sims["plain"]
    base = url.removesuffix("/v1")
    httpx.post(f"{base}/sim/faults", json={"mode": "stream_error", "count": 1})
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.APIError, match="simulated fault: the engine failed mid-stream"):
        list(client.chat.completions.create(model="sim-model", messages=WEATHER, stream=True))
    httpx.post(f"{base}/sim/faults", json={"mode": "truncate", "count": 1})
    parser = SSEParser()
    events = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with httpx.stream(
            "POST",
            f"{url}/chat/completions",
            json={"model": "sim-model", "messages": WEATHER, "stream": True},
        ) as response:
            for piece in response.iter_bytes():
                events += parser.feed(piece)
    assert 2 <= len(events) and not any(e.done for e in events)
    # A non-streaming request under the same fault mode is cut as before.
    httpx.post(f"{base}/sim/faults", json={"mode": "truncate", "count": 1})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{url}/chat/completions", json={"model": "sim-model", "messages": WEATHER})
    httpx.post(f"{base}/sim/faults", json={})


@pytest.mark.parametrize("sim", ["plain", "parser"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_responses_from_the_simulator_stream_equal_the_unstreamed_conversion(
    sims: dict[str, str], sim: str, case: str
) -> None:
    """Raw SSE, read in whatever pieces the socket gives, through our parser and the Responses
    stream (token mode), then through `client.responses.stream(...)`: the final response equals
    `chat_to_response` of the simulator's non-streaming answer to the same request."""
    body = {"model": "sim-model", **CASES[case], **TOKENS}
    request = {"input": "x", "tools": [{"type": "function", "name": "get_weather"}]}
    stream = ResponsesStream(request, model="served", incomplete_as_completed=True)
    events = stream.start()
    reader = ChunkReader()
    with httpx.stream(
        "POST",
        f"{sims[sim]}/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        for piece in response.iter_bytes():
            for chunk in reader.feed(piece):
                events += stream.feed(chunk)
    reader.close()
    info = stream.token_info()
    events += stream.finish(info)

    whole = unstreamed(sims[sim], body)
    streamed_calls = stream.accumulated.choice0()["message"].get("tool_calls") or []
    for call, streamed_call in zip(
        whole["choices"][0]["message"].get("tool_calls") or [], streamed_calls, strict=True
    ):
        call["id"] = streamed_call["id"]  # the one field that differs between two requests
    whole["created"] = stream.accumulated.result()["created"]
    ids, log_probs = generation_tokens(first_choice(whole))
    expected_info = {
        "prompt_token_ids": whole["prompt_token_ids"],
        "generation_token_ids": ids,
        "generation_log_probs": log_probs,
    }
    assert info == expected_info
    expected = chat_to_response(
        whole, request, model="served", uses_reasoning_parser=True, token_info=expected_info, ids=stream.ids
    )
    assert stream.response == expected
    check_events(events, expected, terminal="response.completed")
    _, final = through_openai_client(events)
    assert strip_parsed(final.to_dict()) == expected


@pytest.mark.parametrize("sim", ["plain", "parser"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chat_stream_from_the_simulator_read_by_the_openai_client(
    sims: dict[str, str], sim: str, case: str
) -> None:
    """The adapter's chat path in miniature: the simulator's raw stream through ChunkReader and
    ChatStream (token mode), encoded, read by `client.chat.completions.create(stream=True)`;
    accumulated, it is `chat_completion_for_caller` of the non-streaming answer, token fields
    included."""
    body = {"model": "sim-model", **CASES[case], **TOKENS}
    stream = ChatStream(model="served", uses_reasoning_parser=True, token_mode=True)
    reader = ChunkReader()
    out: list[bytes] = []
    with httpx.stream(
        "POST",
        f"{sims[sim]}/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        for piece in response.iter_bytes():
            for chunk in reader.feed(piece):
                out.append(encode_chunks(stream.feed(chunk)))
    reader.close()
    info = stream.token_info()
    out.append(encode_chunks(stream.finish(info)) + DONE_BYTES)
    sent = b"".join(out)
    client = openai_client_streaming(sent)
    caller = ChatAccumulator()
    for chunk in client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        caller.add(chunk.to_dict())
    received = caller.result()

    whole = unstreamed(sims[sim], body)
    ids, log_probs = generation_tokens(first_choice(whole))
    expected_info = {
        "prompt_token_ids": whole["prompt_token_ids"],
        "generation_token_ids": ids,
        "generation_log_probs": log_probs,
    }
    assert info == expected_info
    expected = chat_completion_for_caller(
        whole, model="served", uses_reasoning_parser=True, token_info=expected_info
    )
    assert comparable(received) == comparable(expected)
    message = received["choices"][0]["message"]
    assert {key: message[key] for key in expected_info} == expected_info
    assert "reasoning" not in message
    if sim == "parser" and case != "plain":
        assert message["content"].startswith("<think>")


def test_errors_before_the_stream_are_json_as_unstreamed() -> None:
    """Like vLLM, a request refused up front (here the prompt does not fit) gets the plain JSON
    error, stream or not, so the adapter detects a context-length overflow the same way."""
    long = [{"role": "user", "content": "word " * 200}]
    with simulator("--max-model-len", "64") as (url, _):
        answers = [
            httpx.post(f"{url}/chat/completions", json={"model": "sim-model", "messages": long, **extra})
            for extra in ({}, {"stream": True})
        ]
    assert [a.status_code for a in answers] == [400, 400]
    assert [a.headers["content-type"] for a in answers] == ["application/json"] * 2
    assert answers[0].json() == answers[1].json()
    assert (
        answers[0].json()["error"]["message"].startswith("This model's maximum context length is 64 tokens.")
    )
