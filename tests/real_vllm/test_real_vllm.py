"""Opt-in tier against a REAL `vllm serve` (CPU build, tiny random model): `make test-real-vllm`.

Two servers: REAL_VLLM_URL (max-model-len 1024, hermes tool parser) and REAL_VLLM_R1_URL
(max-model-len 256, deepseek_r1 reasoning parser). The model's text is random, so these tests
check shapes, token ids, log-probs, routing of errors and round trips, not content.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from openai import OpenAI

from nemo_gym.conversion import ConversionOptions, responses_to_chat
from tests.real_vllm.helpers import GREEDY, R1_URL, TOOL, URL, adapter, model_of

pytestmark = pytest.mark.real_vllm


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    yield from (u for _, u in adapter(URL))


@pytest.fixture(scope="module")
def training() -> Iterator[str]:
    yield from (
        u
        for _, u in adapter(
            URL, "+policy_model.responses_api_models.vllm_model.return_token_id_information=true"
        )
    )


@pytest.fixture(scope="module")
def training_inline() -> Iterator[str]:
    yield from (
        u
        for _, u in adapter(
            URL,
            "+policy_model.responses_api_models.vllm_model.return_token_id_information=true",
            "+policy_model.responses_api_models.vllm_model.request_prompt_and_generation_token_ids=true",
        )
    )


@pytest.fixture(scope="module")
def r1() -> Iterator[str]:
    yield from (u for _, u in adapter(R1_URL))


def test_plain_chat_through_both_endpoints(plain: str) -> None:
    client = OpenAI(base_url=f"{plain}/v1", api_key="x")
    response = client.responses.create(
        model="x", input="Hello, what is the weather in Paris?", max_output_tokens=8
    )
    assert response.status in ("completed", "incomplete") and response.usage.output_tokens <= 8
    assert response.output[-1].type == "message" and response.model == model_of(URL)
    chat = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens <= 5


def test_forced_tool_call_and_round_trip(plain: str) -> None:
    with httpx.Client(base_url=plain, timeout=120) as client:
        first = client.post(
            "/v1/responses", json={"input": "Weather?", "tools": [TOOL], "tool_choice": "required", **GREEDY}
        ).json()
        calls = [i for i in first["output"] if i["type"] == "function_call"]
        assert calls and all(
            c["name"] == "get_weather" and orjson.loads(c["arguments"])["unit"] in ("celsius", "fahrenheit")
            for c in calls
        )
        assert all(c["call_id"].startswith("chatcmpl-tool-") for c in calls)
        history = [{"role": "user", "content": "Weather?"}, *first["output"]]
        history += [
            {"type": "function_call_output", "call_id": c["call_id"], "output": "cold"} for c in calls
        ]
        second = client.post(
            "/v1/responses", json={"input": history, "tools": [TOOL], "max_output_tokens": 8}
        )
        assert second.status_code == 200, second.text


@pytest.mark.parametrize("mode", ["tokenize", "inline"])
def test_token_ids_match_upstream(mode: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue("training" if mode == "tokenize" else "training_inline")
    params = {
        "input": [{"role": "user", "content": "Hello, what is the weather in Paris?"}],
        "tools": [TOOL],
        "max_output_tokens": 12,
        **GREEDY,
    }
    out = httpx.post(f"{base}/v1/responses", json=params, timeout=120).json()
    last = out["output"][-1]
    prompt, generation, log_probs = _direct_tokens(params)
    assert last["prompt_token_ids"] == prompt
    assert last["generation_token_ids"] == generation
    assert (
        len(last["generation_log_probs"])
        == len(last["generation_token_ids"])
        == out["usage"]["output_tokens"]
    )
    assert all(isinstance(x, float) and x <= 0 for x in last["generation_log_probs"])
    assert last["generation_log_probs"] == pytest.approx(log_probs, abs=1e-3)


def test_context_length_overflow_is_empty_result(r1: str) -> None:
    r = httpx.post(f"{r1}/v1/responses", json={"input": "weather " * 400}, timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["type"] for i in body["output"]] == ["message"] and body["output"][0]["content"][0][
        "text"
    ] == ""
    chat = httpx.post(
        f"{r1}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "weather " * 400}]},
        timeout=60,
    ).json()
    assert (
        chat["choices"][0]["finish_reason"] == "length" and chat["choices"][0]["message"]["content"] is None
    )
    too_many = httpx.post(f"{r1}/v1/responses", json={"input": "hi", "max_output_tokens": 1000}, timeout=60)
    assert (
        too_many.status_code == 400
        and "cannot be greater than max_model_len=256" in too_many.json()["error"]["message"]
    )


def test_reasoning_parser_mode(r1: str) -> None:
    params = {"input": "Hello, what is the weather in Paris?", "max_output_tokens": 8, **GREEDY}
    out = httpx.post(f"{r1}/v1/responses", json=params, timeout=60).json()
    direct = httpx.post(
        f"{R1_URL}/v1/chat/completions",
        json={
            "model": model_of(R1_URL),
            "messages": [{"role": "user", "content": params["input"]}],
            "max_tokens": 8,
            **GREEDY,
        },
        timeout=60,
    ).json()["choices"][0]["message"]
    assert direct["reasoning"]  # vLLM put the (untagged) text in its reasoning field
    assert out["output"][0]["type"] == "reasoning"
    assert out["output"][0]["summary"][0]["text"] == direct["reasoning"]
    assert "".join(i["content"][0]["text"] for i in out["output"] if i["type"] == "message") == (
        direct["content"] or ""
    )


def test_reasoning_field_with_parser_off_is_a_clear_error() -> None:
    for run, url in adapter(
        R1_URL, "+policy_model.responses_api_models.vllm_model.uses_reasoning_parser=false"
    ):
        r = httpx.post(f"{url}/v1/responses", json={"input": "Hi", "max_output_tokens": 4}, timeout=60)
        assert r.status_code == 502 and "drop --reasoning-parser" in r.json()["error"]["message"]
        assert run.proc.poll() is None


def test_training_mode_multi_turn_with_carried_back_token_ids(training: str) -> None:
    """Turn 2 sends turn 1's output (with its token fields) back as input; vLLM must accept it."""
    with httpx.Client(base_url=training, timeout=120) as client:
        first = client.post(
            "/v1/responses", json={"input": "Weather?", "tools": [TOOL], "tool_choice": "required", **GREEDY}
        ).json()
        calls = [i for i in first["output"] if i["type"] == "function_call"]
        assert "generation_token_ids" in first["output"][-1]
        history = [{"role": "user", "content": "Weather?"}, *first["output"]]
        history += [
            {"type": "function_call_output", "call_id": c["call_id"], "output": "cold"} for c in calls
        ]
        second = client.post(
            "/v1/responses", json={"input": history, "tools": [TOOL], "max_output_tokens": 8, **GREEDY}
        )
        assert second.status_code == 200, second.text
        last = second.json()["output"][-1]
        assert (
            len(last["generation_token_ids"])
            == len(last["generation_log_probs"])
            == second.json()["usage"]["output_tokens"]
        )
        assert len(last["prompt_token_ids"]) > len(first["output"][-1]["prompt_token_ids"])


def test_kept_alive_connections_outlive_vllm_idle_close_and_concurrency(plain: str) -> None:
    """vLLM's uvicorn closes idle connections after 5 s; our pool must never hand a request a
    connection the server has closed, and must carry many requests at once."""
    import asyncio
    import time

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            replies = await asyncio.gather(
                *(
                    client.post(f"{plain}/v1/responses", json={"input": f"Say {i}", "max_output_tokens": 2})
                    for i in range(n)
                )
            )
        return [r.status_code for r in replies]

    assert asyncio.run(burst(48)) == [200] * 48  # 48 pooled connections to vLLM now open
    time.sleep(6)  # every one of them closed by vLLM as idle
    assert asyncio.run(burst(48)) == [200] * 48


def _direct_tokens(params: dict) -> tuple[list[int], list[int], list[float]]:
    """The engine's own prompt ids, generation ids and log-probs for `params` (greedy)."""
    chat = responses_to_chat(params, ConversionOptions(model=model_of(URL)))
    tokenized = httpx.post(
        f"{URL}/tokenize",
        json={"model": chat["model"], "messages": chat["messages"], "tools": chat.get("tools")},
    ).json()
    direct = httpx.post(
        f"{URL}/v1/chat/completions",
        json={
            **chat,
            "return_token_ids": True,
            "logprobs": True,
            "top_logprobs": 0,
            "return_tokens_as_token_ids": True,
        },
        timeout=120,
    ).json()
    choice = direct["choices"][0]
    return tokenized["tokens"], choice["token_ids"], [e["logprob"] for e in choice["logprobs"]["content"]]


def test_streamed_responses_carry_the_engines_token_ids(training: str) -> None:
    params = {
        "input": [{"role": "user", "content": "Hello, what is the weather in Paris?"}],
        "tools": [TOOL],
        "max_output_tokens": 12,
        **GREEDY,
    }
    client = OpenAI(base_url=f"{training}/v1", api_key="EMPTY")
    known = {k: v for k, v in params.items() if k != "seed"}
    with client.responses.stream(model=model_of(URL), extra_body={"seed": params["seed"]}, **known) as stream:
        events = list(stream)
    final = events[-1].response.model_dump()
    assert events[-1].type in ("response.completed", "response.incomplete")
    last = final["output"][-1]
    prompt, generation, log_probs = _direct_tokens(params)
    assert last["prompt_token_ids"] == prompt
    assert last["generation_token_ids"] == generation
    assert last["generation_log_probs"] == pytest.approx(log_probs, abs=1e-3)
    unstreamed = httpx.post(f"{training}/v1/responses", json=params, timeout=120).json()["output"][-1]
    assert unstreamed["generation_token_ids"] == generation


def test_streamed_chat_carries_the_engines_token_ids(training: str) -> None:
    params = {
        "input": [{"role": "user", "content": "Say something about Paris."}],
        "max_output_tokens": 12,
        **GREEDY,
    }
    client = OpenAI(base_url=f"{training}/v1", api_key="EMPTY")
    deltas = [
        chunk.choices[0].delta.model_extra or {}
        for chunk in client.chat.completions.create(
            model=model_of(URL),
            messages=params["input"],
            max_tokens=12,
            temperature=0.0,
            seed=1,
            stream=True,
        )
        if chunk.choices
    ]
    fields = next(d for d in reversed(deltas) if "generation_token_ids" in d)
    prompt, generation, log_probs = _direct_tokens(params)
    assert fields["prompt_token_ids"] == prompt
    assert fields["generation_token_ids"] == generation
    assert fields["generation_log_probs"] == pytest.approx(log_probs, abs=1e-3)
