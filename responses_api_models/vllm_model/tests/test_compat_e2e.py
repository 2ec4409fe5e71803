"""The adapter as a real process (via ng_run) in front of two simulators, driven by the openai SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseFunctionToolCall, ResponseReasoningItem

from nemo_gym.testing.payloads import WEATHER_TOOLS as TOOLS
from nemo_gym.testing.processes import NgRun, ng_run, simulator

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[NgRun, str, list[str]]]:
    with simulator("--instance-id", "A") as (url_a, _), simulator("--instance-id", "B") as (url_b, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model_for_training.yaml]",
            f"+policy_base_url={url_a},{url_b}",
            "+policy_api_key=sk-compat-test",
            "+policy_model_name=sim-model",
        ) as run:
            yield run, run.url_of("policy_model"), [url_a, url_b]


async def test_openai_responses_multi_turn_tool_call(stack: tuple[NgRun, str, list[str]]) -> None:
    _, url, _ = stack
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    first = await client.responses.create(
        model="anything", input="What is the weather in Paris?", tools=TOOLS
    )
    assert isinstance(first, Response) and first.status == "completed" and first.model == "sim-model"
    reasoning, call = first.output
    assert isinstance(reasoning, ResponseReasoningItem) and isinstance(call, ResponseFunctionToolCall)
    assert reasoning.summary[0].text == "The user asks about the weather in Paris. I should call get_weather."
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    extra = call.model_extra or {}
    assert len(extra["generation_token_ids"]) == len(extra["generation_log_probs"]) > 0
    assert all(isinstance(t, int) for t in extra["prompt_token_ids"])

    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
    ]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "cold"})
    second = await client.responses.create(model="anything", input=history, tools=TOOLS)
    assert second.output_text == "Here is what I found: cold"
    await client.close()


async def test_openai_chat_completions(stack: tuple[NgRun, str, list[str]]) -> None:
    _, url, _ = stack
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
    completion = await client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Say hi"}], extra_body={"top_k": 5}
    )
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Simulated answer to: Say hi"
    extra = completion.choices[0].message.model_extra or {}
    assert len(extra["generation_token_ids"]) == completion.usage.completion_tokens
    await client.close()


async def test_sessions_spread_over_both_upstreams(stack: tuple[NgRun, str, list[str]]) -> None:
    _, url, upstreams = stack

    async def counts() -> list[int]:
        async with httpx.AsyncClient() as c:
            return [(await c.get(u.removesuffix("/v1") + "/sim/stats")).json()["requests"] for u in upstreams]

    before = await counts()
    for _ in range(4):
        async with httpx.AsyncClient() as c:  # a new client = a new session
            assert (await c.post(f"{url}/v1/responses", json={"input": "hi"})).status_code == 200
    after = await counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2]
    async with httpx.AsyncClient() as c:
        health = (await c.get(f"{url}/health?upstream=true")).json()
    assert health["status"] == "ok" and [u["status"] for u in health["upstreams"]] == ["healthy", "healthy"]


async def test_1024_concurrent_responses_all_succeed(stack: tuple[NgRun, str, list[str]]) -> None:
    _, url, _ = stack
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2048)) as client:

        async def one(i: int) -> int:
            async with client.post(f"{url}/v1/responses", json={"input": f"request {i}"}) as response:
                body = await response.json()
                assert body["output"][0]["content"][0]["text"] == f"Simulated answer to: request {i}"
                return response.status

        statuses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1024))), timeout=180)
    assert statuses == [200] * 1024


async def test_context_length_overflow_is_empty_incomplete(stack: tuple[NgRun, str, list[str]]) -> None:
    _, url, _ = stack
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{url}/v1/responses", json={"input": "word " * 5000})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "" and "prompt_token_ids" not in body["output"][0]


async def test_training_mode_ids_equal_the_simulators(stack: tuple[NgRun, str, list[str]]) -> None:
    """Token ids the adapter returns are exactly what the upstream generated and tokenized."""
    from nemo_gym.conversion import ConversionOptions, responses_to_chat

    _, url, upstreams = stack
    history: list[dict] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    async with httpx.AsyncClient(base_url=url) as client:
        for turn in range(2):
            out = (await client.post("/v1/responses", json={"input": history, "tools": TOOLS})).json()
            last = out["output"][-1]
            chat = responses_to_chat(
                {"input": history, "tools": TOOLS},
                ConversionOptions(model="sim-model", return_token_id_information=True),
            )
            async with httpx.AsyncClient() as direct:
                truth = (
                    await direct.post(
                        f"{upstreams[0]}/chat/completions", json={**chat, "return_token_ids": True}
                    )
                ).json()
            assert last["generation_token_ids"] == truth["choices"][0]["token_ids"]
            if turn == 0:
                assert last["prompt_token_ids"] == truth["prompt_token_ids"]
                carried = last["prompt_token_ids"] + last["generation_token_ids"]
            else:
                # Spliced: the previous turn's exact ids, then the template's tail; the plain
                # re-rendering (truth) drifts in the re-serialized tool-call arguments.
                assert last["token_drift"]["spliced"] and last["token_drift"]["extends_carried_tokens"]
                assert last["prompt_token_ids"][: len(carried)] == carried
                assert truth["prompt_token_ids"][: len(carried)] != carried
            history += out["output"]
            if turn == 0:
                history.append({"type": "function_call_output", "call_id": last["call_id"], "output": "cold"})
    assert history[-1]["content"][0]["text"] == "Here is what I found: cold"


def test_upstream_killed_mid_run_sessions_move_to_survivor() -> None:
    import signal

    with simulator("--instance-id", "A") as (url_a, _), simulator("--instance-id", "B") as (url_b, proc_b):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]",
            f"+policy_base_url=[{url_a},{url_b}]",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+policy_model.responses_api_models.vllm_model.retry_backoff=0.01",
        ) as run:
            url = run.url_of("policy_model")
            sessions = [httpx.Client(base_url=url) for _ in range(4)]
            try:
                for s in sessions:
                    assert s.post("/v1/responses", json={"input": "hi"}).status_code == 200
                proc_b.send_signal(signal.SIGKILL)
                proc_b.wait()
                for s in sessions:  # sessions pinned to B re-pin to A
                    for _ in range(2):
                        r = s.post("/v1/responses", json={"input": "hi"})
                        assert (
                            r.status_code == 200
                            and r.json()["output"][0]["content"][0]["text"] == "Simulated answer to: hi"
                        )
                for _ in range(4):  # new sessions avoid the dead upstream
                    assert httpx.post(f"{url}/v1/responses", json={"input": "hi"}).status_code == 200
                health = httpx.get(f"{url}/health?upstream=true")
                assert health.status_code == 200
                assert [(u["url"], u["status"]) for u in health.json()["upstreams"]] == [
                    (url_a, "healthy"),
                    (url_b, "unhealthy"),
                ]
                assert health.json()["status"] == "degraded"
            finally:
                for s in sessions:
                    s.close()


def test_two_workers_keep_each_session_on_one_upstream() -> None:
    with simulator("--instance-id", "A") as (url_a, _), simulator("--instance-id", "B") as (url_b, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]",
            f"+policy_base_url={url_a},{url_b}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+policy_model.responses_api_models.vllm_model.workers=2",
        ) as run:
            url = run.url_of("policy_model")

            def counts() -> list[int]:
                return [
                    httpx.get(u.removesuffix("/v1") + "/sim/stats").json()["requests"] for u in (url_a, url_b)
                ]

            for _ in range(6):
                before = counts()
                with httpx.Client(base_url=url) as session:  # one session, many fresh connections
                    for _ in range(8):
                        assert (
                            session.post(
                                "/v1/responses", json={"input": "hi"}, headers={"connection": "close"}
                            ).status_code
                            == 200
                        )
                delta = [a - b for a, b in zip(counts(), before, strict=True)]
                assert sorted(delta) == [0, 8]  # every request of the session hit the same upstream
