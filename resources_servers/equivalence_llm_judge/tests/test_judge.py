"""Verdict parsing and /verify against a respx-backed judge model."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx

from nemo_gym.server.context import RuntimeContext
from resources_servers.equivalence_llm_judge.app import (
    EquivalenceJudgeConfig,
    EquivalenceLLMJudge,
    parse_verdict,
)

JUDGE = "http://judge.test:5"
GLOBAL = {"judge_model": {"responses_api_models": {"vllm_model": {"host": "judge.test", "port": 5}}}}


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("They match. [[A=B]]", "equal"),
        ("Different numbers.\n[[A!=B]]", "not_equal"),
        ("At first [[A!=B]] but on reflection [[A=B]]", "equal"),
        ("[[A=B]] no wait: [[A!=B]]", "not_equal"),
        ("I cannot decide.", None),
        ("[A=B]", None),
    ],
)
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


def judge_reply(text: str) -> httpx.Response:
    item = {
        "type": "message",
        "role": "assistant",
        "id": "m",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return httpx.Response(
        200, json={"id": "r", "object": "response", "status": "completed", "output": [item]}
    )


def row(answer: str) -> dict[str, Any]:
    return {
        "responses_create_params": {
            "input": [{"role": "system", "content": "s"}, {"role": "user", "content": "Capital of France?"}]
        },
        "expected_answer": "Paris",
        "response": {
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": answer}]}
            ]
        },
    }


async def verify(
    replies: list[httpx.Response], answer: str, **config: Any
) -> tuple[dict[str, Any], respx.Route]:
    server = EquivalenceLLMJudge(
        EquivalenceJudgeConfig(**config), RuntimeContext(GLOBAL, {}, "judge_env", "s")
    )
    app = server.setup_webserver()
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.route(host="env").pass_through()
        route = router.post(f"{JUDGE}/v1/responses").mock(side_effect=replies)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://env") as client:
            r = await client.post("/verify", json=row(answer))
    assert r.status_code == 200, r.text
    return r.json(), route


async def test_equal_gives_reward_one_and_records_the_call() -> None:
    result, route = await verify([judge_reply("Same city. [[A=B]]")], "It is Paris.")
    assert result["reward"] == 1.0 and result["expected_answer"] == "Paris"
    (evaluation,) = result["judge_evaluations"]
    assert evaluation["verdict"] == "equal"
    prompt = orjson.loads(route.calls[0].request.content)["input"][0]["content"]
    assert "<question>\nCapital of France?\n</question>" in prompt
    assert "<answer_a>\nParis\n</answer_a>" in prompt and "<answer_b>\nIt is Paris.\n</answer_b>" in prompt
    assert prompt.rstrip().endswith("[[A=B]] if the answers are equivalent, or [[A!=B]] if they are not.")


@pytest.mark.parametrize(
    ("reply", "reward"), [("[[A!=B]]", 0.0), ("No label at all", 0.0), ("[[A!=B]] ... [[A=B]]", 1.0)]
)
async def test_not_equal_neither_and_both(reply: str, reward: float) -> None:
    result, _ = await verify([judge_reply(reply)], "Lyon")
    assert result["reward"] == reward


async def test_swapped_check_must_agree() -> None:
    result, route = await verify(
        [judge_reply("[[A=B]]"), judge_reply("[[A!=B]]")], "Paris!", check_twice_swap=True
    )
    assert result["reward"] == 0.0 and [e["verdict"] for e in result["judge_evaluations"]] == [
        "equal",
        "not_equal",
    ]
    swapped = orjson.loads(route.calls[1].request.content)["input"][0]["content"]
    assert "<answer_a>\nParis!\n</answer_a>" in swapped and "<answer_b>\nParis\n</answer_b>" in swapped
    result, _ = await verify([judge_reply("[[A=B]]"), judge_reply("[[A=B]]")], "Paris", check_twice_swap=True)
    assert result["reward"] == 1.0 and len(result["judge_evaluations"]) == 2


async def test_extraction_regex() -> None:
    _, route = await verify(
        [judge_reply("[[A=B]]")],
        "Reasoning... Final answer: Paris",
        answer_extraction_regex=r"Final answer:\s*(.+)",
    )
    assert (
        "<answer_b>\nParis\n</answer_b>"
        in orjson.loads(route.calls[0].request.content)["input"][0]["content"]
    )
