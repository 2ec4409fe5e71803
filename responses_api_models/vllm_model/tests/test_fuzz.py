"""Fuzzing both endpoints: never a 500, never a hang, every 4xx an OpenAI-style error body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemo_gym.testing.mock_upstream import MockUpstreams
from responses_api_models.vllm_model.tests.conftest import UP1, chat_body, make_server

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ROLES = st.sampled_from(["user", "assistant", "system", "developer", "tool", "bogus", None])
TYPES = st.sampled_from(
    [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "input_text",
        "output_text",
        "web_search_call",
        None,
    ]
)
PART = st.fixed_dictionaries(
    {
        "type": TYPES | st.sampled_from(["input_image", "input_file", "refusal"]),
        "text": st.text(max_size=10) | JSON,
    }
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": TYPES,
        "role": ROLES,
        "content": st.text(max_size=10) | st.lists(PART, max_size=3) | JSON,
        "summary": st.lists(
            st.fixed_dictionaries({"type": st.just("summary_text"), "text": st.text(max_size=10) | JSON}),
            max_size=2,
        )
        | JSON,
        "call_id": st.text(max_size=5) | JSON,
        "name": st.text(max_size=5) | JSON,
        "arguments": st.text(max_size=5) | JSON,
        "output": st.text(max_size=5) | JSON,
    },
)
RESPONSES = st.fixed_dictionaries(
    {},
    optional={
        "input": st.text(max_size=10) | st.lists(ITEM, max_size=5) | JSON,
        "instructions": st.text(max_size=10) | JSON,
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["function", "web_search"]) | JSON,
                    "name": st.text(max_size=5) | JSON,
                }
            ),
            max_size=2,
        )
        | JSON,
        "tool_choice": st.sampled_from(["auto", "none", "required", "bogus"]) | JSON,
        "text": JSON,
        "max_output_tokens": JSON,
        "stream": st.booleans(),
        "temperature": JSON,
    },
)
CHAT = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": ROLES, "content": st.text(max_size=10) | JSON}),
            max_size=4,
        )
        | JSON,
        "stream": st.booleans(),
        "top_k": JSON,
    },
)


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    loop = asyncio.new_event_loop()
    upstreams = MockUpstreams()
    upstreams.post(f"{UP1}/chat/completions").respond(200, json=chat_body("<think>r</think>ok"))
    server = make_server()
    server.pool.network = upstreams.transport
    app = server.build_asgi()
    loop.run_until_complete(server.startup())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://adapter")
    yield loop, client
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(server.shutdown())
    loop.close()


def check(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient, path: str, content: bytes) -> None:
    response = loop.run_until_complete(
        asyncio.wait_for(client.post(path, content=content, headers={"content-type": "application/json"}), 5)
    )
    assert response.status_code in (200, 400, 413), response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        # A stream (stream: true): every event is JSON, and it ends as a stream must. Its lines
        # end at "\n" only (splitlines() would also cut at a U+0085 inside the JSON).
        data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
        assert data and all(d == "[DONE]" or isinstance(json.loads(d), dict) for d in data)
        if path == "/v1/responses":
            assert json.loads(data[-1])["type"] in (
                "response.completed",
                "response.incomplete",
                "response.failed",
            )
        else:
            assert data[-1] == "[DONE]"
        return
    body = response.json()
    if response.status_code != 200:
        error = body["error"]
        assert (
            set(error) == {"message", "type", "param", "code"}
            and isinstance(error["message"], str)
            and error["message"]
        )


FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=RESPONSES | JSON)
def test_fuzz_responses(harness: Any, body: Any) -> None:
    check(
        *harness,
        "/v1/responses",
        json.dumps(body).encode(),
    )


@FUZZ
@given(body=CHAT | JSON)
def test_fuzz_chat(harness: Any, body: Any) -> None:
    check(
        *harness,
        "/v1/chat/completions",
        json.dumps(body).encode(),
    )


@FUZZ
@given(raw=st.binary(max_size=64))
def test_fuzz_raw_bytes(harness: Any, raw: bytes) -> None:
    check(*harness, "/v1/responses", raw)
