"""Where token mode's prompt ids come from: vLLM's own answer (`return_token_ids`) when it has
them; otherwise the /tokenize of the upstream that answered the generation, sent exactly the
messages it rendered (the reasoning under both keys, tools, template kwargs)."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_gym.upstream import Upstream
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.serving import VLLMServing
from responses_api_models.vllm_model.tests.toy_template import chat


class StubPool:
    """Records calls; `chat_from` is the upstream the generation ends up on; `inline`: whether
    its answer carries prompt_token_ids."""

    def __init__(self, chat_from: str, inline: bool) -> None:
        self.a = Upstream(0, "http://a/v1", "http://a", transport=None)  # type: ignore[arg-type]
        self.b = Upstream(1, "http://b/v1", "http://b", transport=None)  # type: ignore[arg-type]
        self.chat_from = self.a if chat_from == "a" else self.b
        self.inline = inline
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def route(self, session_id: str | None) -> Upstream:
        return self.a

    async def post(self, path: str, body: dict, *, session_id=None, upstream=None, at_root=False) -> Any:
        if path == "/chat/completions":
            self.calls.append((path, self.chat_from.root_url, body))
            return chat([1, 2] if self.inline else None, gen=[7]), self.chat_from
        self.calls.append((path, upstream.root_url, body))
        return {"tokens": [9, 9, 9]}, upstream


def serving(pool: StubPool) -> VLLMServing:
    config = VLLMModelConfig.model_validate(
        {"base_url": ["http://a/v1"], "api_key": "EMPTY", "model": "m", "return_token_id_information": True}
    )
    return VLLMServing(config, pool)  # type: ignore[arg-type]


HISTORY = {
    "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "R"}]},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ],
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
}


async def test_inline_prompt_ids_need_no_tokenize() -> None:
    pool = StubPool(chat_from="a", inline=True)
    out = await serving(pool).responses(HISTORY, "s1")
    assert out["output"][-1]["prompt_token_ids"] == [1, 2]
    assert [(p, u) for p, u, _ in pool.calls] == [("/chat/completions", "http://a")]
    assert pool.calls[0][2]["return_token_ids"] is True


@pytest.mark.parametrize("answered_by", ["a", "b"])
async def test_without_inline_ids_the_answering_upstream_tokenizes_the_same_messages(
    answered_by: str,
) -> None:
    pool = StubPool(chat_from=answered_by, inline=False)
    s = serving(pool)
    for _ in range(2):  # the second time it is known not to return them: same path
        out = await s.responses(HISTORY, "s1")
        assert out["output"][-1]["prompt_token_ids"] == [9, 9, 9]
    (path, url, generation), (tpath, turl, tokenize) = pool.calls[:2]
    assert (path, tpath, turl) == ("/chat/completions", "/tokenize", f"http://{answered_by}")
    assert tokenize == {
        "model": "m",
        "messages": generation["messages"],
        "tools": generation["tools"],
    }
    assert tokenize["messages"][1] == {
        "role": "assistant",
        "content": "a",
        "reasoning": "R",
        "reasoning_content": "R",
    }
    assert s.ledger.facts(pool.chat_from.index).returns_prompt_ids is False
