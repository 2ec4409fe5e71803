"""Token mode on the simulator's model-family templates (nemo_gym/testing/sim_templates.py), each
reproducing a way real families break exact token ids: Qwen3 (drops earlier reasoning; with
thinking off, a generation prompt history does not repeat), Mistral (an unmarked tool call the
template marks, call ids that must be nine characters), R1 (a think block opened by the
generation prompt that history never renders). The adapter runs in-process against a
simulator process; every multi-turn rollout must be one token sequence, with the simulator's own
re-rendering shown to drift, and every context-length wording must give the empty result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from nemo_gym.conversion import ConversionOptions, responses_to_chat
from nemo_gym.conversion.prefix import without_token_fields
from nemo_gym.testing.payloads import OPENAI_CALL_ID as OPENAI_ID
from nemo_gym.testing.payloads import WEATHER_TOOLS as TOOLS
from nemo_gym.testing.processes import simulator
from responses_api_models.vllm_model.tests.conftest import make_server

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def adapter(sim_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = make_server(
        base_url=[sim_url], api_key="EMPTY", model="sim-model", return_token_id_information=True, **overrides
    )
    await server.startup()
    try:
        transport = httpx.ASGITransport(app=server.build_asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://adapter", timeout=60) as client:
            yield client
    finally:
        await server.shutdown()


async def rollout(client: httpx.AsyncClient, city: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Three times: a tool call → its result → an answer → a new user question. Returns each
    turn's last output item and the final history."""
    history: list[dict[str, Any]] = [{"role": "user", "content": f"What is the weather in {city}?"}]
    lasts = []
    for turn in range(6):
        r = await client.post("/v1/responses", json={"input": history, "tools": TOOLS})
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        lasts.append(out[-1])
        history += out
        calls = [item for item in out if item["type"] == "function_call"]
        assert bool(calls) == (turn % 2 == 0), out
        history += [
            {"type": "function_call_output", "call_id": c["call_id"], "output": "cold"} for c in calls
        ]
        if turn % 2 == 1:
            history.append({"role": "user", "content": "And in Oslo?"})
    return lasts, history


def one_sequence(lasts: list[dict[str, Any]]) -> bool:
    return all(
        b["prompt_token_ids"][: len(a["prompt_token_ids"]) + len(a["generation_token_ids"])]
        == a["prompt_token_ids"] + a["generation_token_ids"]
        for a, b in zip(lasts, lasts[1:], strict=False)
    )


@pytest.mark.parametrize(
    ("template", "sim_args", "config"),
    [
        ("chatml", [], {}),
        ("qwen3", [], {}),
        ("qwen3", [], {"chat_template_kwargs": {"enable_thinking": False}}),
        ("mistral", [], {}),
        ("r1", ["--reasoning-parser"], {}),
    ],
    ids=["chatml", "qwen3", "qwen3-no-thinking", "mistral", "r1"],
)
async def test_every_template_keeps_a_rollout_one_token_sequence(
    template: str, sim_args: list[str], config: dict[str, Any]
) -> None:
    with simulator("--template", template, *sim_args) as (sim_url, _):
        async with adapter(sim_url, prefix_token_ids="required", **config) as client:
            lasts, history = await rollout(client, "Paris")
            counts = (await client.get("/health?upstream=true")).json()["upstreams"][0]["token_drift"]
            final = (await client.post("/v1/responses", json={"input": history, "tools": TOOLS})).json()
        body = {"model": "sim-model", "messages": [], "tools": [{"type": "function", "function": TOOLS[0]}]}
        # the template's own rendering of the whole rollout, as vLLM would render it unspliced
        options = ConversionOptions(model="sim-model", return_token_id_information=True)
        chat = responses_to_chat({"input": history, "tools": TOOLS}, options)
        body["messages"] = without_token_fields(chat["messages"])
        if config.get("chat_template_kwargs"):
            body["chat_template_kwargs"] = config["chat_template_kwargs"]
        async with httpx.AsyncClient() as raw:
            rendered = (await raw.post(sim_url.removesuffix("/v1") + "/tokenize", json=body)).json()["tokens"]
    assert one_sequence(lasts)
    assert all(last["token_drift"]["outcome"] == "spliced" for last in lasts[1:])
    assert counts["measured"] == 5 and counts["spliced"] == 5 and counts["diverged"] == 0
    carried = lasts[-1]["prompt_token_ids"] + lasts[-1]["generation_token_ids"]
    assert final["output"][-1]["prompt_token_ids"][: len(carried)] == carried
    # the failure each template reproduces: its re-rendering is not the token sequence
    assert rendered[: len(carried)] != carried


async def test_mistral_call_ids_are_mapped_and_mapped_back() -> None:
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": OPENAI_ID,
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": OPENAI_ID, "output": "cold"},
    ]
    with simulator("--template", "mistral") as (sim_url, _):
        async with adapter(sim_url, tool_call_id_format="keep") as client:
            refused = await client.post("/v1/responses", json={"input": history, "tools": TOOLS})
        async with adapter(sim_url) as client:
            r = await client.post("/v1/responses", json={"input": history, "tools": TOOLS})
            chat = await client.post(
                "/v1/chat/completions",
                json={
                    "messages": [
                        {"role": "user", "content": "q"},
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": OPENAI_ID,
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": "{}"},
                                }
                            ],
                        },
                        {"role": "tool", "tool_call_id": OPENAI_ID, "content": "cold"},
                    ],
                    "tools": [{"type": "function", "function": TOOLS[0]}],
                },
            )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Tool call IDs should be alphanumeric strings with length 9!"
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert [item["type"] for item in out] == ["message"]  # the answer to the tool result
    assert chat.status_code == 200, chat.text


async def test_every_context_length_wording_gives_the_empty_result() -> None:
    """The simulator answers each as vLLM 0.32 does: a rendered prompt over the context in tokens,
    a text over vLLM's characters bound, a spliced prompt (given as ids) over the context, and a
    spliced prompt exactly as long as the context (max_tokens capped to 0, also when the caller
    asked for some); plain and streamed."""
    with simulator("--max-model-len", "512") as (sim_url, _):
        async with adapter(sim_url) as client:

            async def ask(body: dict[str, Any]) -> dict[str, Any]:
                r = await client.post("/v1/responses", json=body)
                assert r.status_code == 200, r.text
                return r.json()

            async def ask_streamed(body: dict[str, Any]) -> dict[str, Any]:
                r = await client.post("/v1/responses", json={**body, "stream": True})
                assert r.status_code == 200, r.text
                events = [orjson.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: ")]
                return next(e["response"] for e in events if e["type"] == "response.incomplete")

            seen = {
                "tokens": await ask({"input": "word " * 600, "max_output_tokens": 8}),
                "tokens, streamed": await ask_streamed({"input": "word " * 600}),
                "characters": await ask({"input": "x" * 9000}),
            }
            first = (await ask({"input": [{"role": "user", "content": "Weather in Lima?"}], "tools": TOOLS}))[
                "output"
            ]
            history = [{"role": "user", "content": "Weather in Lima?"}, *first]

            def result(text: str) -> dict[str, Any]:
                return {"type": "function_call_output", "call_id": first[-1]["call_id"], "output": text}

            seen["ids"] = await ask({"input": [*history, result("word " * 600)], "tools": TOOLS})
            seen["ids, streamed"] = await ask_streamed(
                {"input": [*history, result("word " * 600)], "tools": TOOLS}
            )
            fits = (await ask({"input": [*history, result("cold")], "tools": TOOLS}))["output"][-1]
            assert fits["token_drift"]["outcome"] == "spliced"
            gen = first[-1]["generation_token_ids"]
            padded = {
                **first[-1],
                "generation_token_ids": [
                    *gen[:-1],
                    *[gen[0]] * (512 - len(fits["prompt_token_ids"])),
                    gen[-1],
                ],
            }
            full = {"input": [history[0], padded, result("cold")], "tools": TOOLS, "max_output_tokens": 8}
            seen["exactly full"] = await ask(full)
            metrics = (await client.get("/metrics")).text
    for name, out in seen.items():
        assert out["status"] == "incomplete", name
        assert [item["content"][0]["text"] for item in out["output"]] == [""], name
    assert "\nnemo_gym_context_length_fallbacks_total 6.0\n" in metrics, metrics
