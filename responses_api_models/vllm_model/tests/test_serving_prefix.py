"""Prefix splicing in the adapter (the token ledger): what goes upstream, what comes back, each
mode's fallback and each refusal, against a toy ChatML template with readable ids."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nemo_gym.conversion import ConversionOptions, responses_to_chat
from nemo_gym.server.errors import APIError
from nemo_gym.upstream import Upstream
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.serving import VLLMServing
from responses_api_models.vllm_model.tests.toy_template import (
    EOT,
    GEN1,
    IM_END,
    IM_START,
    NL,
    OUTCOMES0,
    P1,
    RENDERED,
    SPLICED,
    TAIL,
    chat,
    render,
)


class Pool:
    """An upstream with the toy template: honours kv_transfer_params.prompt_token_ids unless
    `ignores`; answers the closing probe (continue_final_message) unless `probe` is False."""

    def __init__(
        self, ignores: bool = False, probe: bool = True, think: bool = False, mark: bool = False
    ) -> None:
        self.a = Upstream(0, "http://a/v1", "http://a", transport=None)  # type: ignore[arg-type]
        self.ignores = ignores
        self.probe = probe
        self.think = think  # the generation prompt ends with an id (77) history never renders
        self.mark = mark
        self.finish = "stop"
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.probes: list[dict[str, Any]] = []

    def route(self, session_id: str | None) -> Upstream:
        return self.a

    async def post(self, path: str, body: dict, *, session_id=None, upstream=None, at_root=False) -> Any:
        messages = body["messages"]
        if path == "/tokenize" and messages[-1].get("content") == "b":  # the closing probe
            self.probes.append(body)
            if body.get("continue_final_message") and not self.probe:
                raise APIError(400, "continue_final_message is not supported")
            return {"tokens": render(messages, False, bool(body.get("continue_final_message")))}, self.a
        self.bodies.append((path, body))
        rendered = render(messages, body.get("add_generation_prompt", True), think=self.think, mark=self.mark)
        if path == "/tokenize":
            return {"tokens": rendered}, self.a
        supplied = (body.get("kv_transfer_params") or {}).get("prompt_token_ids")
        prompt = rendered if (self.ignores or supplied is None) else supplied
        return chat(prompt if body.get("return_token_ids") else None, finish=self.finish), self.a

    async def post_raw(self, path: str, body: dict, **kwargs: Any) -> Any:
        answer, upstream = await self.post(path, body, **kwargs)
        return orjson.dumps(answer), upstream

    def tokenize_calls(self) -> list[dict[str, Any]]:
        return [b for p, b in self.bodies if p == "/tokenize"]


def serving(pool: Pool, **config: Any) -> VLLMServing:
    cfg = VLLMModelConfig.model_validate(
        {
            "base_url": ["http://a/v1"],
            "api_key": "EMPTY",
            "model": "m",
            "return_token_id_information": True,
            "tool_call_id_format": "keep",
            **config,
        }
    )
    return VLLMServing(cfg, pool)  # type: ignore[arg-type]


def request(gen: list[int] = GEN1, prompt: list[int] = P1, instructions: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "input": [
            {"role": "user", "content": "weather?"},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": "{}",
                "prompt_token_ids": prompt,
                "generation_token_ids": gen,
                "generation_log_probs": [-1.0] * len(gen),
            },
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
        ]
    }
    if instructions is not None:
        params["instructions"] = instructions
    return params


async def test_auto_splices_and_verifies() -> None:
    pool = Pool()
    s = serving(pool)
    out = (await s.responses(request(), "s"))["output"][-1]
    # three renderings of the request's own messages, then the generation
    assert [p for p, _ in pool.bodies] == ["/tokenize"] * 3 + ["/chat/completions"]
    whole, through, opening = pool.tokenize_calls()
    assert [m["role"] for m in whole["messages"]] == [
        "user",
        "assistant",
        "tool",
    ] and "add_generation_prompt" not in whole
    assert [m["role"] for m in through["messages"]] == ["user", "assistant"] and through[
        "add_generation_prompt"
    ] is False
    assert [m["role"] for m in opening["messages"]] == ["user"] and opening["add_generation_prompt"] is True
    assert [b.get("continue_final_message") for b in pool.probes] == [None, True]  # once per process
    sent = pool.bodies[-1][1]
    assert sent["kv_transfer_params"] == {"prompt_token_ids": SPLICED} and sent["return_token_ids"] is True
    assert all("prompt_token_ids" not in m for m in sent["messages"])  # the carried lists stay here
    assert out["prompt_token_ids"] == SPLICED
    assert out["token_drift"] == {
        "extends_carried_tokens": True,
        "divergence": None,
        "spliced": True,
        "outcome": "spliced",
    }
    assert s.drift_counts(0) == {
        "measured": 1,
        "extends": 1,
        "diverged": 0,
        "spliced": 1,
        "fallbacks": 0,
        "outcomes": {**OUTCOMES0, "spliced": 1},
    }
    await s.responses(request(), "s")
    assert len(pool.probes) == 2  # not asked again
    assert len(pool.tokenize_calls()) == 5  # the opening's rendering is kept


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
    assert pool.bodies[-1][1]["messages"][1] == {"role": "assistant", "content": "x"}


async def test_a_generation_prompt_history_does_not_repeat() -> None:
    """The template's generation prompt ends with an id (77, like `<think>\\n`) that it does not
    render for the same turn in history: the carried ids keep it, the splice needs nothing of it."""
    pool = Pool(think=True)
    prompt = [*P1, 77]
    out = (await serving(pool, prefix_token_ids="required").responses(request(prompt=prompt), "s"))["output"][
        -1
    ]
    assert out["prompt_token_ids"] == [*prompt, *GEN1, *TAIL[:-3], IM_START, 20, NL, 77]
    assert out["token_drift"]["outcome"] == "spliced"


async def test_auto_falls_back_once_detected_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(ignores=True)
    s = serving(pool)
    first = (await s.responses(request(), "s"))["output"][-1]
    assert first["prompt_token_ids"] == RENDERED
    drift = first["token_drift"]
    assert drift["spliced"] is False and drift["outcome"] == "upstream_ignores"
    assert "ignores kv_transfer_params" in drift["note"]
    assert drift["divergence"] == {"index": 8, "expected": 31, "actual": 32}
    before = len(pool.bodies)
    second = (await s.responses(request(), "s"))["output"][-1]
    # known not to honour it: plain rendering, and no renderings asked (vLLM's own ids come inline)
    assert [p for p, _ in pool.bodies[before:]] == ["/chat/completions"]
    assert "kv_transfer_params" not in pool.bodies[-1][1]
    assert "ignores kv_transfer_params" in second["token_drift"]["note"]
    assert sum("returned other prompt ids" in r.message for r in caplog.records) == 1
    counts = s.drift_counts(0)
    assert counts["fallbacks"] == 2 and counts["outcomes"] == {**OUTCOMES0, "upstream_ignores": 2}


async def test_required_fails_clearly() -> None:
    with pytest.raises(APIError) as info:
        await serving(Pool(ignores=True), prefix_token_ids="required").responses(request(), "s")
    assert info.value.status == 502 and "required" in str(info.value.message)


async def test_off_renders_and_still_measures() -> None:
    pool = Pool()
    s = serving(pool, prefix_token_ids="off")
    out = (await s.responses(request(), "s"))["output"][-1]
    assert [p for p, _ in pool.bodies] == ["/chat/completions"]
    assert "kv_transfer_params" not in pool.bodies[0][1]
    assert out["prompt_token_ids"] == RENDERED
    assert out["token_drift"] == {
        "extends_carried_tokens": False,
        "divergence": {"index": 8, "expected": 31, "actual": 32},
        "spliced": False,
        "outcome": "off",
    }
    assert s.drift_counts(0)["diverged"] == 1 and s.drift_counts(0)["fallbacks"] == 0


async def test_first_turn_has_no_drift_report_and_needs_no_tokenize() -> None:
    pool = Pool()
    out = (await serving(pool).responses({"input": "hi"}, "s"))["output"][-1]
    assert "token_drift" not in out and out["prompt_token_ids"] == P1
    assert [p for p, _ in pool.bodies] == ["/chat/completions"]


async def test_cut_off_generation_gets_the_templates_whole_closing() -> None:
    # nothing learned yet (real vLLM: a forced tool call cut off by max_output_tokens); the
    # generation's last id is no end-of-turn token: the template's closing tokens follow it
    out = (await serving(Pool(), prefix_token_ids="required").responses(request(gen=[30, 31]), "s"))[
        "output"
    ][-1]
    assert out["prompt_token_ids"] == [*P1, 30, 31, IM_END, *TAIL]
    assert out["token_drift"]["spliced"] is True


async def test_without_the_probe_a_cut_off_turn_is_refused_until_a_generation_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Pool(probe=False)
    s = serving(pool)
    drift = (await s.responses(request(gen=[30, 31]), "s"))["output"][-1]["token_drift"]
    assert drift["spliced"] is False and drift["outcome"] == "template_unaligned"
    assert "closing tokens are unknown" in drift["note"]
    # that generation stopped on its own on 1667: the closing is read off the rendering from it
    out = (await s.responses(request(gen=[30, 31]), "s"))["output"][-1]
    assert out["token_drift"]["spliced"] is True and out["prompt_token_ids"] == [*P1, 30, 31, IM_END, *TAIL]
    assert len(pool.probes) == 2  # asked once, not on every request
    assert sum("could not learn the chat template's closing" in r.message for r in caplog.records) == 1


async def test_a_failing_upstream_is_probed_again_later() -> None:
    class Flaky(Pool):
        async def post(self, path: str, body: dict, **kwargs: Any) -> Any:
            if body["messages"][-1].get("content") == "b" and not self.probes:
                self.probes.append(body)
                raise APIError(503, "down")
            return await super().post(path, body, **kwargs)

    pool = Flaky()
    pool.finish = "length"  # nothing to learn the end-of-turn id from
    s = serving(pool)
    assert (
        "closing tokens are unknown"
        in (await s.responses(request(gen=[30, 31]), "s"))["output"][-1]["token_drift"]["note"]
    )
    assert (await s.responses(request(gen=[30, 31]), "s"))["output"][-1]["token_drift"]["spliced"] is True


async def test_configured_end_of_turn_needs_no_probe() -> None:
    pool = Pool()
    out = (await serving(pool, end_of_turn_token_ids=[EOT]).responses(request(gen=[30, 31]), "s"))["output"][
        -1
    ]
    assert out["token_drift"]["spliced"] is True and pool.probes == []
    assert out["prompt_token_ids"] == [*P1, 30, 31, IM_END, *TAIL]


async def test_a_changed_system_prompt_is_refused_with_the_reason() -> None:
    pool = Pool()
    s = serving(pool)
    # the first turn ran without a system prompt; now the caller adds one
    drift = (await s.responses(request(instructions="S2"), "s"))["output"][-1]["token_drift"]
    assert drift["outcome"] == "conversation_changed" and drift["spliced"] is False
    assert "system prompt, the tools or the first messages changed" in drift["note"]
    assert "kv_transfer_params" not in pool.bodies[-1][1]
    with pytest.raises(APIError) as info:
        await serving(Pool(), prefix_token_ids="required").responses(request(instructions="S2"), "s")
    assert info.value.status == 502 and "first messages changed" in info.value.message


async def test_a_carried_prompt_that_is_the_templates_own_rendering_splices() -> None:
    """An earlier turn that was not spliced carries the template's rendering of the turns before
    it; with a template that marks the last user message (Mistral puts the tools there) that does
    not start with the opening, but it is what vLLM renders: it is spliced onto. Anything else
    that does not start with the opening is another conversation."""
    pool = Pool(mark=True)
    s = serving(pool)
    params = request()
    params["input"][:0] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}]
    before = render(responses_to_chat(params, s.options)["messages"][:3], True, mark=True)
    assert before[:3] == [IM_START, 10, IM_END]  # the opening's rendering has 88 there
    params["input"][3]["prompt_token_ids"] = before
    out = (await s.responses(params, "s"))["output"][-1]
    assert out["token_drift"]["outcome"] == "spliced"
    assert out["prompt_token_ids"] == [*before, *GEN1, *TAIL]
    params["input"][3]["prompt_token_ids"] = [*before[:3], 55, *before[3:]]
    drift = (await s.responses(params, "s"))["output"][-1]["token_drift"]
    assert drift["outcome"] == "conversation_changed"


def test_required_prefix_token_ids_passes_through() -> None:
    body = responses_to_chat(
        {"input": "hi", "required_prefix_token_ids": [1, 2]}, ConversionOptions(model="m")
    )
    assert body["required_prefix_token_ids"] == [1, 2]


async def test_a_rendering_the_template_refuses_refuses_the_splice_not_the_request() -> None:
    class Refusing(Pool):
        async def post(self, path: str, body: dict, **kwargs: Any) -> Any:
            if (
                path == "/tokenize"
                and body.get("add_generation_prompt") is False
                and len(body["messages"]) == 2
            ):
                if body["messages"][-1].get("content") != "b":  # not the closing probe
                    raise APIError(400, "Cannot render a conversation that ends with an assistant message")
            return await super().post(path, body, **kwargs)

    pool = Refusing()
    out = (await serving(pool).responses(request(), "s"))["output"][-1]
    assert out["token_drift"]["outcome"] == "template_unaligned"
    assert out["token_drift"]["note"] == (
        "the template could not render the conversation: "
        "Cannot render a conversation that ends with an assistant message"
    )
    assert out["prompt_token_ids"] == RENDERED  # generated all the same, rendered by the template
