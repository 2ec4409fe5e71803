"""Prefix splicing in the adapter: what goes upstream, what comes back, each mode's fallback."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_gym.conversion import ConversionOptions, responses_to_chat
from nemo_gym.server.errors import APIError
from nemo_gym.upstream import Upstream
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.serving import VLLMServing

EOT = 1667
P1 = [1666, 10, 1667, 198, 1666, 20, 198]  # system-less: user turn, generation prompt
GEN1 = [30, 31, EOT]
# /tokenize of the whole conversation: the history re-rendered (31 became 32 33: drift), then
# the tool result turn and the generation prompt.
RENDERED = [1666, 10, 1667, 198, 1666, 20, 198, 30, 32, 33, 1667, 198, 1666, 40, 41, 1667, 198, 1666, 20, 198]
SPLICED = [*P1, *GEN1, 198, 1666, 40, 41, 1667, 198, 1666, 20, 198]
# The template probe (a user and an assistant message), finished: the open rendering lacks the
# template's closing tokens, <|im_end|> and a newline.
PROBE_CLOSED = [1666, 10, 1667, 198, 1666, 20, 198, 5, 1667, 198]


def chat(prompt_ids: list[int] | None) -> dict[str, Any]:
    return {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
                "stop_reason": None,
                "logprobs": {
                    "content": [
                        {"token": "token_id:7", "logprob": -0.5},
                        {"token": "token_id:1667", "logprob": -0.1},
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        "prompt_token_ids": prompt_ids,
    }


class Pool:
    """An upstream that honours kv_transfer_params.prompt_token_ids unless `ignores`."""

    def __init__(self, ignores: bool = False, probe: bool = True) -> None:
        self.a = Upstream(0, "http://a/v1", "http://a", client=None)  # type: ignore[arg-type]
        self.ignores = ignores
        self.probe = probe  # answers continue_final_message (vLLM does; older servers may not)
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.probes: list[dict[str, Any]] = []

    def route(self, session_id: str | None) -> Upstream:
        return self.a

    def post_nowait(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def post(self, path: str, body: dict, *, session_id=None, upstream=None, at_root=False) -> Any:
        if path == "/tokenize" and body.get("add_generation_prompt") is False:
            self.probes.append(body)
            cut = 2 if self.probe and body.get("continue_final_message") else 0
            return {"tokens": PROBE_CLOSED[: len(PROBE_CLOSED) - cut]}, self.a
        self.bodies.append((path, body))
        if path == "/tokenize":
            return {"tokens": RENDERED}, self.a
        supplied = (body.get("kv_transfer_params") or {}).get("prompt_token_ids")
        prompt = RENDERED if (self.ignores or supplied is None) else supplied
        return chat(prompt if body.get("return_token_ids") else None), self.a


def serving(pool: Pool, **config: Any) -> VLLMServing:
    cfg = VLLMModelConfig.model_validate(
        {
            "base_url": ["http://a/v1"],
            "api_key": "EMPTY",
            "model": "m",
            "return_token_id_information": True,
            **config,
        }
    )
    return VLLMServing(cfg, pool)  # type: ignore[arg-type]


def request() -> dict[str, Any]:
    return {
        "input": [
            {"role": "user", "content": "weather?"},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": "{}",
                "prompt_token_ids": P1,
                "generation_token_ids": GEN1,
                "generation_log_probs": [-1.0, -1.0, -1.0],
            },
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
        ]
    }


async def test_auto_splices_and_verifies() -> None:
    pool = Pool()
    s = serving(pool)
    out = (await s.responses(request(), "s"))["output"][-1]
    assert [p for p, _ in pool.bodies] == ["/tokenize", "/chat/completions"]  # one /tokenize, as before
    assert [b.get("continue_final_message") for b in pool.probes] == [None, True]  # once per process
    sent = pool.bodies[1][1]
    assert sent["kv_transfer_params"] == {"prompt_token_ids": SPLICED} and sent["return_token_ids"] is True
    assert out["prompt_token_ids"] == SPLICED
    assert out["token_drift"] == {"extends_carried_tokens": True, "divergence": None, "spliced": True}
    assert s.drift_counts(0) == {"measured": 1, "extends": 1, "diverged": 0, "spliced": 1, "fallbacks": 0}
    await s.responses(request(), "s")
    assert len(pool.probes) == 2


async def test_chat_input_carries_tokens_on_the_assistant_message() -> None:
    pool = Pool()
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "x", "prompt_token_ids": P1, "generation_token_ids": GEN1},
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
    ]
    out = await serving(pool).chat_completions({"messages": messages}, "s")
    assert out["choices"][0]["message"]["prompt_token_ids"] == SPLICED
    assert out["choices"][0]["message"]["token_drift"]["spliced"] is True


async def test_auto_falls_back_once_detected_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(ignores=True)
    s = serving(pool)
    first = (await s.responses(request(), "s"))["output"][-1]
    assert first["prompt_token_ids"] == RENDERED
    drift = first["token_drift"]
    assert drift["spliced"] is False and "ignores kv_transfer_params" in drift["note"]
    assert drift["divergence"] == {"index": 8, "expected": 31, "actual": 32}
    second = (await s.responses(request(), "s"))["output"][-1]
    assert "kv_transfer_params" not in pool.bodies[-1][1]  # known not to honour it: plain rendering
    assert "ignores kv_transfer_params" in second["token_drift"]["note"]
    assert sum("returned other prompt ids" in r.message for r in caplog.records) == 1
    assert s.drift_counts(0) == {"measured": 2, "extends": 0, "diverged": 2, "spliced": 0, "fallbacks": 2}


async def test_required_fails_clearly() -> None:
    with pytest.raises(APIError) as info:
        await serving(Pool(ignores=True), prefix_token_ids="required").responses(request(), "s")
    assert info.value.status == 502 and "required" in str(info.value.message)


async def test_off_keeps_todays_behaviour_and_still_measures() -> None:
    pool = Pool()
    s = serving(pool, prefix_token_ids="off")
    out = (await s.responses(request(), "s"))["output"][-1]
    assert all("kv_transfer_params" not in body for _, body in pool.bodies)
    assert out["prompt_token_ids"] == RENDERED
    assert out["token_drift"] == {
        "extends_carried_tokens": False,
        "divergence": {"index": 8, "expected": 31, "actual": 32},
        "spliced": False,
    }
    assert s.drift_counts(0)["diverged"] == 1 and s.drift_counts(0)["fallbacks"] == 0


async def test_first_turn_has_no_drift_report() -> None:
    out = (await serving(Pool()).responses({"input": "hi"}, "s"))["output"][-1]
    assert "token_drift" not in out


async def test_cut_off_generation_uses_the_learned_end_of_turn() -> None:
    pool = Pool()
    s = serving(pool)
    await s.responses({"input": "hi"}, "s")  # finished with stop on 1667: learned
    params = request()
    params["input"][1]["generation_token_ids"] = [30, 31]  # finish_reason length
    out = (await s.responses(params, "s"))["output"][-1]
    assert out["prompt_token_ids"] == [*P1, 30, 31, EOT, 198, 1666, 40, 41, 1667, 198, 1666, 20, 198]


async def test_cut_off_first_turn_uses_the_templates_end_of_turn() -> None:
    # nothing learned yet (real vLLM: a forced tool call cut off by max_output_tokens); the
    # generation's last id is no end-of-turn token, the template's closing tokens say which is
    params = request()
    params["input"][1]["generation_token_ids"] = [30, 31]
    out = (await serving(Pool(), prefix_token_ids="required").responses(params, "s"))["output"][-1]
    assert out["prompt_token_ids"] == [*P1, 30, 31, EOT, 198, 1666, 40, 41, 1667, 198, 1666, 20, 198]
    assert out["token_drift"]["spliced"] is True


async def test_without_the_probe_a_cut_off_first_turn_is_refused_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = request()
    params["input"][1]["generation_token_ids"] = [30, 31]
    pool = Pool(probe=False)
    s = serving(pool)
    drift = (await s.responses(params, "s"))["output"][-1]["token_drift"]
    assert drift["spliced"] is False and "end-of-turn ids [31]" in drift["note"]
    # that generation stopped on its own (on 1667): learned from it, the next one splices
    assert (await s.responses(params, "s"))["output"][-1]["token_drift"]["spliced"] is True
    assert len(pool.probes) == 2  # asked once, not on every request
    assert sum("could not learn the chat template's end-of-turn" in r.message for r in caplog.records) == 1


async def test_a_failing_upstream_is_probed_again_later() -> None:
    class Flaky(Pool):
        async def post(self, path: str, body: dict, **kwargs: Any) -> Any:
            if body.get("add_generation_prompt") is False and not self.probes:
                self.probes.append(body)
                raise APIError(503, "down")
            answer, upstream = await super().post(path, body, **kwargs)
            if "choices" in answer:  # cut off too: nothing to learn the end-of-turn id from
                answer["choices"][0]["finish_reason"] = "length"
            return answer, upstream

    pool = Flaky()
    s = serving(pool)
    params = request()
    params["input"][1]["generation_token_ids"] = [30, 31]
    assert "fewer than" in (await s.responses(params, "s"))["output"][-1]["token_drift"]["note"]
    assert (await s.responses(params, "s"))["output"][-1]["token_drift"]["spliced"] is True
    assert len(pool.probes) == 3


async def test_configured_end_of_turn_needs_no_probe() -> None:
    pool = Pool()
    params = request()
    params["input"][1]["generation_token_ids"] = [30, 31]
    out = (await serving(pool, end_of_turn_token_ids=[EOT]).responses(params, "s"))["output"][-1]
    assert out["token_drift"]["spliced"] is True and pool.probes == []


def test_required_prefix_token_ids_passes_through() -> None:
    body = responses_to_chat(
        {"input": "hi", "required_prefix_token_ids": [1, 2]}, ConversionOptions(model="m")
    )
    assert body["required_prefix_token_ids"] == [1, 2]
