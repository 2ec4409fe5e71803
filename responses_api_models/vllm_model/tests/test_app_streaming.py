"""`stream: true` through the adapter and its own lean client, over a MockTransport: a captured
vLLM stream reaches the caller as events, a stream that breaks off ends with an error event, and
what fails before the stream starts is an ordinary answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.testing.mock_upstream import MockUpstreams
from nemo_gym.upstream.transport.mock import MockRequest, MockResponse
from responses_api_models.vllm_model.tests.conftest import UP1, adapter, sent

WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
CHAT = [{"role": "user", "content": "x"}]
CUT = "upstream http://up1:8000/v1 failed mid-response (connection closed mid-response)"


def captured_events() -> list[bytes]:
    """vLLM's stream as it sent it, one event per write."""
    raw = (WIRE / "chat_stream.sse").read_bytes()
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]


def data_of(text: str) -> list[Any]:
    lines = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


def chat_text(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c != "[DONE]" and c.get("choices")
    )


async def test_a_captured_vllm_stream_reaches_the_caller_as_events(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").respond(200, stream=captured_events())
    async with adapter(upstream) as client:
        chat = await client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True})
        responses = await client.post("/v1/responses", json={"input": "x", "stream": True})
    assert sent(route, 0)["stream"] is True and sent(route, 1)["stream"] is True
    assert chat.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = data_of(chat.text)
    assert chat_text(chunks) == "72dason 498" and chunks[-1] == "[DONE]"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] == "length"
    events = data_of(responses.text)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "72dason 498"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert upstream.transport.connections == {"up1:8000": 1}  # both streams on one kept-alive connection


async def test_a_stream_that_breaks_off_ends_with_an_error_event(upstream: MockUpstreams) -> None:
    def cut(request: MockRequest) -> MockResponse:
        def events() -> Iterator[bytes]:
            yield from captured_events()[:2]
            raise ConnectionResetError

        return MockResponse(200, stream=events())

    upstream.post(f"{UP1}/chat/completions").mock(side_effect=cut)
    async with adapter(upstream) as client:
        chat = await client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True})
        responses = await client.post("/v1/responses", json={"input": "x", "stream": True})
    chunks = data_of(chat.text)
    assert chat.status_code == 200 and chat_text(chunks) == "72"
    assert chunks[-2:] == [
        {"error": {"message": CUT, "type": "server_error", "param": None, "code": None}},
        "[DONE]",
    ]
    events = data_of(responses.text)
    assert responses.status_code == 200 and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": CUT}


async def test_what_fails_before_the_stream_starts_is_an_ordinary_answer(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions")
    async with adapter(upstream) as client:
        bad = await client.post("/v1/responses", json={"input": [{"type": "computer_call"}], "stream": True})
        route.respond(401, json={"error": "Unauthorized"})
        refused = await client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True})
        route.respond(400, content=(WIRE / "err_prompt_too_long.json").read_bytes())
        too_long = await client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "input[0].type")
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "Unauthorized"
    chunks = data_of(too_long.text)  # the empty result, as a stream
    assert too_long.status_code == 200 and chat_text(chunks) == "" and chunks[-1] == "[DONE]"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] == "length"
    assert route.call_count == 2  # the bad request never went upstream
