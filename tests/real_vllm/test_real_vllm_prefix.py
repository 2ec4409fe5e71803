"""Opt-in, against a REAL `vllm serve` (>= 0.32; `make test-real-vllm`): prefix splicing keeps a
multi-turn rollout one token sequence. The tiny model's text is random, so tool calls are forced
(tool_choice required + strict schema: guided decoding, the case that drifts most)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.real_vllm.helpers import GREEDY, TOOL, URL, adapter

pytestmark = pytest.mark.real_vllm
TOKEN_MODE = "+policy_model.responses_api_models.vllm_model.return_token_id_information=true"
OFF = "+policy_model.responses_api_models.vllm_model.prefix_token_ids=off"
REQUIRED = "+policy_model.responses_api_models.vllm_model.prefix_token_ids=required"


@pytest.fixture(scope="module")
def spliced() -> Iterator[str]:
    yield from (u for _, u in adapter(URL, TOKEN_MODE, REQUIRED))


@pytest.fixture(scope="module")
def unspliced() -> Iterator[str]:
    yield from (u for _, u in adapter(URL, TOKEN_MODE, OFF))


def extends(a: dict[str, Any], b: dict[str, Any]) -> bool:
    prefix = a["prompt_token_ids"] + a["generation_token_ids"]
    return b["prompt_token_ids"][: len(prefix)] == prefix


def tool_rollout(
    url: str, turns: int = 5, city: str = "Paris", cut: frozenset[int] = frozenset()
) -> list[dict[str, Any]]:
    """Forced tool calls answered by tool results; a turn in `cut` is cut off by
    max_output_tokens inside its tool-call text (an incomplete message, then a user turn)."""
    history: list[dict[str, Any]] = [{"role": "user", "content": f"Weather in {city}?"}]
    lasts = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for turn in range(turns):
            body = {
                "input": history,
                "tools": [TOOL],
                "tool_choice": "required",
                "max_output_tokens": 24 if turn in cut else 64,
                **GREEDY,
            }
            r = client.post("/v1/responses", json=body)
            assert r.status_code == 200, r.text
            out = r.json()["output"]
            lasts.append(out[-1])
            history += out
            calls = [item for item in out if item["type"] == "function_call"]
            assert bool(calls) == (turn not in cut)
            if calls:
                history += [
                    {"type": "function_call_output", "call_id": c["call_id"], "output": '{"temp": 21}'}
                    for c in calls
                ]
            else:
                history.append({"role": "user", "content": "Again?"})
    return lasts


def drift_line(lasts: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"turn {i + 1}: " + ("extends" if d["extends_carried_tokens"] else f"diverges at {d['divergence']}")
        for i, d in enumerate(x["token_drift"] for x in lasts[1:])
    )


def test_five_turn_tool_rollout_is_one_token_sequence(spliced: str, unspliced: str) -> None:
    lasts = tool_rollout(spliced, cut=frozenset({2}))
    for a, b in zip(lasts, lasts[1:], strict=False):
        assert extends(a, b)
        assert b["token_drift"]["spliced"] and b["token_drift"]["extends_carried_tokens"]
    plain = tool_rollout(unspliced, cut=frozenset({2}))
    print(f"\n5-turn tool rollout, splicing on: {drift_line(lasts)}")
    print(f"5-turn tool rollout, splicing off: {drift_line(plain)}")
    # each re-rendered tool call drifts (guided decoding spells <tool_call> character by character)
    assert all(not b["token_drift"]["extends_carried_tokens"] for b in plain[1:])
    assert all(not extends(a, b) for a, b in zip(plain, plain[1:], strict=False))


def chat_rollout(url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Hello"}]
    lasts = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for turn in range(3):
            # turn 1 is cut off (finish_reason length): the template's end-of-turn token closes it
            body = {"messages": messages, "max_tokens": 5 if turn == 1 else 20, **GREEDY}
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            message = r.json()["choices"][0]["message"]
            lasts.append(message)
            messages += [message, {"role": "user", "content": f"And {turn}?"}]
    return lasts


def test_three_turn_chat_rollout_is_one_token_sequence(spliced: str, unspliced: str) -> None:
    lasts = chat_rollout(spliced)
    for a, b in zip(lasts, lasts[1:], strict=False):
        assert extends(a, b) and b["token_drift"]["spliced"]
    plain = chat_rollout(unspliced)
    print(f"\n3-turn chat rollout, splicing on: {drift_line(lasts)}")
    print(f"3-turn chat rollout, splicing off: {drift_line(plain)}")
    # random text may or may not re-tokenize the same: the measurement must match the ids
    assert all(
        b["token_drift"]["extends_carried_tokens"] == extends(a, b)
        for a, b in zip(plain, plain[1:], strict=False)
    )


def test_zero_drift_over_20_rollouts_with_splicing(spliced: str) -> None:
    before = httpx.get(f"{spliced}/health?upstream=true").json()["upstreams"][0]["token_drift"]
    for i in range(20):
        lasts = tool_rollout(spliced, turns=3, city=f"City{i}")
        assert all(extends(a, b) for a, b in zip(lasts, lasts[1:], strict=False))
    after = httpx.get(f"{spliced}/health?upstream=true").json()["upstreams"][0]["token_drift"]
    delta = {k: after[k] - before[k] for k in after if k != "outcomes"}
    print(f"\n20 tool rollouts of 3 turns, splicing on: drift counts {delta}")
    assert after["measured"] - before["measured"] == 40
    assert after["diverged"] == before["diverged"] and after["fallbacks"] == before["fallbacks"]
    assert after["outcomes"]["spliced"] - before["outcomes"]["spliced"] == 40


def prefix_cache(url: str) -> tuple[float, float]:
    """(hits, queries) from vLLM's Prometheus counters."""
    text = httpx.get(f"{url}/metrics", timeout=10).text

    def total(name: str) -> float:
        return sum(
            float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        )

    return total("vllm:prefix_cache_hits_total"), total("vllm:prefix_cache_queries_total")


def test_prefix_cache_hits_with_splicing_on_vs_off(spliced: str, unspliced: str) -> None:
    """The same rollouts (own cities per mode, so neither reuses the other's turns) through
    each adapter; vLLM counts prefix-cache queries and hits in prompt tokens."""
    rates = {}
    for name, url in (("on", spliced), ("off", unspliced)):
        hits0, queries0 = prefix_cache(URL)
        for i in range(5):
            tool_rollout(url, turns=4, city=f"{name}{i}", cut=frozenset({2}))
        hits1, queries1 = prefix_cache(URL)
        assert queries1 > queries0
        rates[name] = (hits1 - hits0) / (queries1 - queries0)
        print(
            f"\nvLLM prefix cache, 5 tool rollouts of 4 turns, splicing {name}: "
            f"{hits1 - hits0:.0f} hits / {queries1 - queries0:.0f} queries = {rates[name]:.3f}"
        )
    assert rates["on"] > rates["off"]
