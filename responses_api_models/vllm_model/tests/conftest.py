"""Adapter test helpers: an in-process adapter whose upstreams are answered by a `MockTransport`
under its own lean transport (the production client, over memory instead of sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from nemo_gym.testing.mock_upstream import MockRoute, MockUpstreams
from responses_api_models.vllm_model.app import VLLMModel
from responses_api_models.vllm_model.config import VLLMModelConfig

UP1 = "http://up1:8000/v1"
UP2 = "http://up2:8000/v1"


def make_server(**overrides: Any) -> VLLMModel:
    cfg: dict[str, Any] = {
        "base_url": [UP1],
        "api_key": "sk-test-key",
        "model": "served-model",
        "retry_backoff": 0.0,
    }
    cfg.update(overrides)
    return VLLMModel(config=VLLMModelConfig.model_validate(cfg))


@asynccontextmanager
async def adapter(upstreams: MockUpstreams, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = make_server(**overrides)
    server.pool.network = upstreams.transport
    app = server.build_asgi()
    await server.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://adapter"
        ) as client:
            client.server = server  # type: ignore[attr-defined]
            yield client
    finally:
        await server.shutdown()


@pytest.fixture
def upstream() -> MockUpstreams:
    return MockUpstreams()


def sent(route: MockRoute, n: int = -1) -> dict:
    return orjson.loads(route.calls[n].content)


def chat_body(
    content: Any = "Hello!", *, finish: str = "stop", tool_calls: list | None = None, **extra: Any
) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "reasoning": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "token_ids": None,
    }
    choice.update(extra.pop("choice", {}))
    body = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1795693694,
        "model": "served-model",
        "choices": [choice],
        "usage": {
            "prompt_tokens": 19,
            "total_tokens": 27,
            "completion_tokens": 8,
            "prompt_tokens_details": None,
        },
        "prompt_token_ids": None,
    }
    body.update(extra)
    return body
