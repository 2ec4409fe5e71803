"""Which upstream tokenizes in /tokenize token mode: the /tokenize request goes out beside the
generation, but its answer counts only if the generation stayed on that upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nemo_gym.upstream import Upstream, UpstreamError, UpstreamPool
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.serving import VLLMServing

CHAT = {
    "id": "c",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": "token_id:7", "logprob": -0.5}]},
        }
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}


class StubPool:
    """Records calls; `chat_from` is the upstream the generation ends up on."""

    def __init__(self, chat_from: str, nowait: bool = True, chat_error: Exception | None = None) -> None:
        self.a = Upstream(0, "http://a/v1", "http://a", client=None)  # type: ignore[arg-type]
        self.b = Upstream(1, "http://b/v1", "http://b", client=None)  # type: ignore[arg-type]
        self.chat_from = self.a if chat_from == "a" else self.b
        self.nowait = nowait
        self.chat_error = chat_error
        self.calls: list[tuple[str, str]] = []
        self.pending: asyncio.Future | None = None

    def route(self, session_id: str | None) -> Upstream:
        return self.a

    def post_nowait(self, path: str, body: dict, upstream: Upstream, *, at_root: bool = False) -> Any:
        if not self.nowait:
            return None
        self.calls.append(("nowait" + path, upstream.root_url))
        self.pending = asyncio.get_running_loop().create_future()
        self.pending.set_result((200, b'{"tokens": [1, 2]}'))
        return self.pending

    nowait_result = staticmethod(UpstreamPool.nowait_result)
    abandon = staticmethod(UpstreamPool.abandon)

    async def post(self, path: str, body: dict, *, session_id=None, upstream=None, at_root=False) -> Any:
        self.calls.append((path, (upstream or self.a).root_url))
        if path == "/chat/completions":
            if self.chat_error:
                raise self.chat_error
            return CHAT, self.chat_from
        return {"tokens": [9, 9, 9]}, upstream


def serving(pool: StubPool) -> VLLMServing:
    config = VLLMModelConfig.model_validate(
        {"base_url": ["http://a/v1"], "api_key": "EMPTY", "model": "m", "return_token_id_information": True}
    )
    return VLLMServing(config, pool)  # type: ignore[arg-type]


async def test_tokenize_beside_the_generation_on_the_same_upstream() -> None:
    pool = StubPool(chat_from="a")
    out = await serving(pool).responses({"input": "hi"}, "s1")
    assert out["output"][-1]["prompt_token_ids"] == [1, 2]
    assert out["output"][-1]["generation_token_ids"] == [7]
    assert pool.calls == [("nowait/tokenize", "http://a"), ("/chat/completions", "http://a")]


async def test_generation_moved_upstream_so_that_one_tokenizes() -> None:
    pool = StubPool(chat_from="b")
    out = await serving(pool).responses({"input": "hi"}, "s1")
    assert out["output"][-1]["prompt_token_ids"] == [9, 9, 9]
    assert pool.calls[-1] == ("/tokenize", "http://b")
    assert pool.pending is not None and pool.pending.done()


async def test_no_idle_connection_tokenizes_after_the_generation() -> None:
    pool = StubPool(chat_from="a", nowait=False)
    out = await serving(pool).responses({"input": "hi"}, "s1")
    assert out["output"][-1]["prompt_token_ids"] == [9, 9, 9]
    assert pool.calls == [("/chat/completions", "http://a"), ("/tokenize", "http://a")]


async def test_failed_generation_abandons_the_pending_tokenize() -> None:
    loop = asyncio.get_running_loop()
    pool = StubPool(chat_from="a", chat_error=UpstreamError(503, "down"))

    def pending_post_nowait(path: str, body: dict, upstream: Upstream, *, at_root: bool = False) -> Any:
        pool.pending = loop.create_future()  # still in flight when the generation fails
        return pool.pending

    pool.post_nowait = pending_post_nowait  # type: ignore[method-assign]
    with pytest.raises(UpstreamError, match="down"):
        await serving(pool).responses({"input": "hi"}, "s1")
    assert pool.pending is not None and pool.pending.cancelled()
