"""The simulator answers with the same shapes as real vLLM (captures in tests/fixtures/vllm_wire)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nemo_gym.testing.checks import shape_diff
from nemo_gym.testing.processes import simulator

pytestmark = pytest.mark.e2e
WIRE = Path(__file__).parent / "fixtures" / "vllm_wire"
HELLO = [{"role": "user", "content": "Hello, what is the weather in Paris?"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def capture(name: str) -> tuple[int, Any]:
    status = int((WIRE / f"{name}.meta").read_text().split()[1])
    raw = (WIRE / f"{name}.json").read_bytes()
    return status, (orjson.loads(raw) if raw.strip() else None)


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with simulator("--max-model-len", "256", "--model", "tiny-qwen2") as (url, _):
        yield url.removesuffix("/v1")


@pytest.fixture(scope="module")
def sim_reasoning() -> Iterator[str]:
    with simulator("--max-model-len", "1024", "--model", "tiny-qwen2", "--reasoning-parser") as (url, _):
        yield url.removesuffix("/v1")


CHAT = "/v1/chat/completions"
CASES = [
    ("chat_basic", CHAT, {"model": "tiny-qwen2", "messages": HELLO, "max_tokens": 8}),
    (
        "chat_logprobs_tokenids",
        CHAT,
        {
            "model": "tiny-qwen2",
            "messages": HELLO,
            "max_tokens": 4,
            "logprobs": True,
            "top_logprobs": 2,
            "return_tokens_as_token_ids": True,
        },
    ),
    (
        "chat_return_token_ids",
        CHAT,
        {"model": "tiny-qwen2", "messages": HELLO, "max_tokens": 8, "return_token_ids": True},
    ),
    ("chat_no_model_field", CHAT, {"messages": HELLO, "max_tokens": 8}),
    (
        "err_prompt_too_long",
        CHAT,
        {"model": "tiny-qwen2", "messages": [{"role": "user", "content": "word " * 400}]},
    ),
    ("err_max_tokens_too_large", CHAT, {"model": "tiny-qwen2", "messages": HELLO, "max_tokens": 1000}),
    ("err_missing_messages", CHAT, {"model": "tiny-qwen2", "max_tokens": 8}),
    ("err_unknown_model", CHAT, {"model": "no-such-model", "messages": HELLO}),
    ("tokenize_messages", "/tokenize", {"model": "tiny-qwen2", "messages": HELLO}),
    ("tokenize_messages_tools", "/tokenize", {"model": "tiny-qwen2", "messages": HELLO, "tools": [TOOL]}),
]
MESSAGE_FORMATS = {
    "err_prompt_too_long": r"This model's maximum context length is 256 tokens\. However, your prompt contains at least \d+ input tokens, which exceeds this limit even without any output tokens\. Please reduce the length of the input prompt\. \(parameter=input_tokens, value=\d+\)",
    "err_max_tokens_too_large": r"max_tokens=1000 cannot be greater than max_model_len=256\. Please request fewer output tokens\. \(parameter=max_tokens, value=1000\)",
    "err_unknown_model": r"The model `no-such-model` does not exist\. Valid aliases: tiny-qwen2\.",
    "err_missing_messages": r"1 validation error:\n  \{'type': 'missing', 'loc': 'body\.messages'",
}


@pytest.mark.parametrize(("name", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_same_shape_as_real_vllm(sim: str, name: str, path: str, body: dict) -> None:
    status, real = capture(name)
    response = httpx.post(sim + path, json=body)
    assert response.status_code == status
    ours = response.json()
    assert shape_diff(real, ours) == []
    if name in MESSAGE_FORMATS:
        assert re.fullmatch(MESSAGE_FORMATS[name] + ".*", ours["error"]["message"], re.DOTALL)
        assert (
            ours["error"]["type"] == real["error"]["type"]
            and ours["error"]["param"] == real["error"]["param"]
        )


def test_prompt_exactly_filling_context(sim: str) -> None:
    status, real = capture("err_prompt256_equals_max_model_len")

    def count(text: str) -> int:
        return httpx.post(sim + "/tokenize", json={"messages": [{"role": "user", "content": text}]}).json()[
            "count"
        ]

    candidates = (" ".join(["w"] * k) + tail for k in range(100, 140) for tail in ("", "?"))
    filler = next(text for text in candidates if count(text) == 256)
    response = httpx.post(sim + CHAT, json={"messages": [{"role": "user", "content": filler}]})
    assert response.status_code == status and response.json() == real


def test_models_health_version(sim: str) -> None:
    for name, path in (("models", "/v1/models"), ("version", "/version")):
        status, real = capture(name)
        response = httpx.get(sim + path)
        assert response.status_code == status and shape_diff(real, response.json()) == []
    health = httpx.get(sim + "/health")
    assert health.status_code == 200 and health.content == b""


def test_reasoning_parser_mode_shapes(sim_reasoning: str) -> None:
    status, real = capture("reasoning_r1_chat")
    response = httpx.post(
        sim_reasoning + CHAT,
        json={"model": "tiny-qwen2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
    )
    assert response.status_code == status and shape_diff(real, response.json()) == []
    status, real = capture("tools_required_strict_enum")
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = httpx.post(
        sim_reasoning + CHAT,
        json={"model": "tiny-qwen2", "messages": weather, "tools": [TOOL], "tool_choice": "required"},
    )
    ours = response.json()
    assert response.status_code == status and shape_diff(real, ours) == []
    message = ours["choices"][0]["message"]
    assert (
        message["content"] == ""
        and message["reasoning"] == "The user asks about the weather in Paris. I should call get_weather."
    )
    assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{16}", message["tool_calls"][0]["id"])
    assert ours["choices"][0]["finish_reason"] == "tool_calls"


def test_length_finish_and_token_ids_are_deterministic(sim: str) -> None:
    body = {
        "messages": HELLO,
        "max_tokens": 3,
        "logprobs": True,
        "top_logprobs": 0,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    first, second = (httpx.post(sim + CHAT, json=body).json() for _ in range(2))
    choice = first["choices"][0]
    assert (
        choice["finish_reason"] == "length"
        and len(choice["token_ids"]) == 3
        and first["usage"]["completion_tokens"] == 3
    )
    assert [e["token"] for e in choice["logprobs"]["content"]] == [
        f"token_id:{t}" for t in choice["token_ids"]
    ]
    assert (
        choice["token_ids"] == second["choices"][0]["token_ids"]
        and first["prompt_token_ids"] == second["prompt_token_ids"]
    )
    assert (
        first["prompt_token_ids"] == httpx.post(sim + "/tokenize", json={"messages": HELLO}).json()["tokens"]
    )


def test_fault_injection(sim: str) -> None:
    def chat() -> httpx.Response:
        return httpx.post(sim + CHAT, json={"messages": HELLO, "max_tokens": 2}, timeout=2.0)

    httpx.post(sim + "/sim/faults", json={"mode": "status", "status": 500, "count": 1})
    assert chat().status_code == 500 and chat().status_code == 200
    httpx.post(sim + "/sim/faults", json={"mode": "malformed", "count": 1})
    with pytest.raises(ValueError):
        orjson.loads(chat().content)
    httpx.post(sim + "/sim/faults", json={"mode": "drop", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        chat()
    httpx.post(sim + "/sim/faults", json={"mode": "stall", "count": 1, "stall_s": 5})
    with pytest.raises(httpx.ReadTimeout):
        chat()
    httpx.post(sim + "/sim/faults", json={"mode": None})
    assert chat().status_code == 200
    stats = httpx.get(sim + "/sim/stats").json()
    assert stats["instance_id"] != "" and stats["requests"] >= 6


def test_prompt_token_ids_in_kv_transfer_params_and_tool_call_drift(sim: str) -> None:
    """vLLM >= 0.32: kv_transfer_params.prompt_token_ids is the prompt (no rendering). And like
    real vLLM, a generated tool call re-renders differently (arguments re-serialized)."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    body = {"messages": ask, "tools": tools, "return_token_ids": True}
    first = httpx.post(sim + CHAT, json=body).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["token_ids"][-1] == 1667  # <|im_end|>
    message = {k: v for k, v in choice["message"].items() if k in ("role", "content", "tool_calls")}
    history = [*ask, message]
    rendered = httpx.post(sim + "/tokenize", json={"messages": history, "tools": tools}).json()["tokens"]
    generated = first["prompt_token_ids"] + choice["token_ids"]
    assert rendered[: len(generated)] != generated  # re-tokenization drift
    echoed = httpx.post(
        sim + CHAT, json={**body, "kv_transfer_params": {"prompt_token_ids": [1, 2, 3]}}
    ).json()
    assert echoed["prompt_token_ids"] == [1, 2, 3] and echoed["usage"]["prompt_tokens"] == 3


def test_ignore_prompt_token_ids_flag() -> None:
    with simulator("--ignore-prompt-token-ids") as (url, _):
        body = {
            "messages": HELLO,
            "return_token_ids": True,
            "kv_transfer_params": {"prompt_token_ids": [1, 2]},
        }
        out = httpx.post(url + "/chat/completions", json=body).json()
    assert out["prompt_token_ids"] != [1, 2] and len(out["prompt_token_ids"]) > 2
