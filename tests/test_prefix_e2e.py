"""Multi-turn token-mode rollouts through ng_run + the simulator: with prefix splicing on, every
turn's prompt extends the previous turn's prompt + generation exactly (zero drift); with it off,
or on an upstream that ignores kv_transfer_params.prompt_token_ids, the simulator's re-rendered
tool calls drift and the adapter measures it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nemo_gym.testing.payloads import TRAINING_CONFIG as TRAINING
from nemo_gym.testing.payloads import WEATHER_TOOLS as TOOLS
from nemo_gym.testing.processes import ng_run, simulator

pytestmark = pytest.mark.e2e


async def rollout(url: str, city: str) -> list[dict[str, Any]]:
    """user → tool call → tool result → answer → user again → tool call → result → answer;
    returns each turn's last output item (it carries the token ids)."""
    history: list[dict[str, Any]] = [{"role": "user", "content": f"What is the weather in {city}?"}]
    lasts = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:  # keeps the session cookie
        for turn in range(4):
            r = await client.post("/v1/responses", json={"input": history, "tools": TOOLS})
            assert r.status_code == 200, r.text
            out = r.json()["output"]
            lasts.append(out[-1])
            history += out
            if out[-1]["type"] == "function_call":
                history.append(
                    {"type": "function_call_output", "call_id": out[-1]["call_id"], "output": "cold"}
                )
            elif turn < 3:
                history.append({"role": "user", "content": "And in Oslo?"})
    return lasts


def one_sequence(lasts: list[dict[str, Any]]) -> bool:
    return all(
        b["prompt_token_ids"][: len(a["prompt_token_ids"]) + len(a["generation_token_ids"])]
        == a["prompt_token_ids"] + a["generation_token_ids"]
        for a, b in zip(lasts, lasts[1:], strict=False)
    )


async def test_zero_drift_with_splicing_and_measured_drift_without() -> None:
    with (
        simulator("--instance-id", "A") as (url_a, _),
        simulator("--instance-id", "B", "--ignore-prompt-token-ids") as (url_b, _),
    ):
        # auto, two upstreams: sessions alternate, A honours the field, B ignores it (fallback)
        with ng_run(
            TRAINING,
            f"+policy_base_url={url_a},{url_b}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
        ) as run:
            url = run.url_of("policy_model")
            rollouts = [await rollout(url, city) for city in ("Paris", "Rome", "Lima", "Bern")]
            async with httpx.AsyncClient() as c:
                health = (await c.get(f"{url}/health?upstream=true")).json()
        spliced = [r for r in rollouts if r[1]["token_drift"]["spliced"]]
        fallen = [r for r in rollouts if not r[1]["token_drift"]["spliced"]]
        assert len(spliced) == 2 and len(fallen) == 2
        for r in spliced:
            assert one_sequence(r)
            assert all(
                t["token_drift"]["extends_carried_tokens"] and t["token_drift"]["spliced"] for t in r[1:]
            )
        for r in fallen:
            assert not one_sequence(r)
            assert "ignores kv_transfer_params" in r[1]["token_drift"]["note"]
            assert r[1]["token_drift"]["divergence"] is not None
        counts = {u["url"]: u["token_drift"] for u in health["upstreams"]}
        assert counts[url_a] == {
            "measured": 6,
            "extends": 6,
            "diverged": 0,
            "spliced": 6,
            "fallbacks": 0,
            "outcomes": {
                "spliced": 6,
                "conversation_changed": 0,
                "template_unaligned": 0,
                "upstream_ignores": 0,
                "off": 0,
            },
        }
        assert (
            counts[url_b]["spliced"] == 0
            and counts[url_b]["fallbacks"] == 6
            and counts[url_b]["diverged"] > 0
            and counts[url_b]["outcomes"]["upstream_ignores"] == 6
        )

        with ng_run(
            TRAINING,
            f"+policy_base_url={url_a}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+policy_model.responses_api_models.vllm_model.prefix_token_ids=off",
        ) as run:
            url = run.url_of("policy_model")
            off = [await rollout(url, city) for city in ("Paris", "Rome")]
            async with httpx.AsyncClient() as c:
                health = (await c.get(f"{url}/health?upstream=true")).json()
        assert not any(one_sequence(r) for r in off)
        drift = health["upstreams"][0]["token_drift"]
        assert drift["measured"] == 6 and drift["diverged"] > 0 and drift["spliced"] == 0
        assert drift["outcomes"]["off"] == 6
        print(
            f"\ndrift with splicing on: 0/6 turns; off: {drift['diverged']}/{drift['measured']} turns diverged"
        )


async def test_a_cut_off_first_turn_splices_on_a_fresh_adapter() -> None:
    """The first spliced request of a process carries a generation cut off by max_output_tokens:
    its last id is no end-of-turn token, so the adapter asks the template which one is."""
    with simulator() as (sim_url, _):
        with ng_run(
            TRAINING,
            f"+policy_base_url={sim_url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+policy_model.responses_api_models.vllm_model.prefix_token_ids=required",
        ) as run:
            url = run.url_of("policy_model")
            history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
            lasts = []
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                for limit in (6, None):
                    body: dict[str, Any] = {"input": history, "tools": TOOLS}
                    if limit:
                        body["max_output_tokens"] = limit
                    r = await client.post("/v1/responses", json=body)
                    assert r.status_code == 200, r.text
                    out = r.json()["output"]
                    lasts.append(out[-1])
                    history += [*out, {"role": "user", "content": "And in Oslo?"}]
    assert lasts[0]["type"] == "message" and len(lasts[0]["generation_token_ids"]) == 6
    assert one_sequence(lasts) and lasts[1]["token_drift"]["spliced"]
