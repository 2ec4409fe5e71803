"""What model families need besides the splice: call ids a template constrains (mapped there and
back), the reasoning key(s) of history, every context-length wording vLLM uses, and the splice
outcomes counted on /metrics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nemo_gym.conversion.call_ids import (
    CallIdFormat,
    call_id_mapping,
    history_call_ids,
    is_valid,
    map_history,
    unmap_chat,
)
from nemo_gym.exceptions import APIError
from nemo_gym.testing.checks import samples
from nemo_gym.testing.mock_upstream import MockUpstreams
from nemo_gym.testing.payloads import OPENAI_CALL_ID as OPENAI_ID
from nemo_gym.upstream import Upstream
from nemo_gym.upstream.errors import is_context_length_error
from nemo_gym.upstream.transport.mock import MockRequest, MockResponse
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.template_probe import TemplateProbe
from responses_api_models.vllm_model.tests.conftest import UP1, adapter, chat_body, sent
from responses_api_models.vllm_model.tests.toy_template import GEN1, P1, SPLICED, chat, render

MISTRAL_ERROR = {
    "error": {
        "message": "Tool call IDs should be alphanumeric strings with length 9!",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}

# ---- call ids ------------------------------------------------------------------------------


def test_call_id_mapping_is_deterministic_collision_free_and_keeps_valid_ids() -> None:
    ids = [OPENAI_ID, "a1B2c3D4e", "chatcmpl-tool-9fcd95b0593843c3"]
    mapping = call_id_mapping(ids, CallIdFormat.ALNUM9)
    assert set(mapping) == {OPENAI_ID, "chatcmpl-tool-9fcd95b0593843c3"}  # the valid one stays
    assert all(is_valid(new, CallIdFormat.ALNUM9) for new in mapping.values())
    assert len({*mapping.values(), "a1B2c3D4e"}) == 3
    assert call_id_mapping(ids, CallIdFormat.ALNUM9) == mapping  # same ids, same mapping
    # more history later: earlier ids keep their mapping
    assert call_id_mapping([*ids, "call_other"], CallIdFormat.ALNUM9).items() >= mapping.items()
    assert call_id_mapping(ids, CallIdFormat.KEEP) == {}
    assert call_id_mapping(["a1B2c3D4e"], CallIdFormat.ALNUM9) == {}


def test_no_mapped_id_takes_a_valid_id_of_the_history() -> None:
    first = call_id_mapping([OPENAI_ID], CallIdFormat.ALNUM9)[OPENAI_ID]
    # the caller also used, later, the very id OPENAI_ID would map to: that one keeps it
    mapping = call_id_mapping([OPENAI_ID, first], CallIdFormat.ALNUM9)
    assert list(mapping) == [OPENAI_ID] and mapping[OPENAI_ID] != first
    assert is_valid(mapping[OPENAI_ID], CallIdFormat.ALNUM9)


def test_map_history_and_back() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": OPENAI_ID, "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": OPENAI_ID, "content": "r"},
    ]
    assert history_call_ids(messages) == [OPENAI_ID]
    mapping = call_id_mapping([OPENAI_ID], CallIdFormat.ALNUM9)
    mapped = map_history(messages, mapping)
    new = mapping[OPENAI_ID]
    assert mapped[1]["tool_calls"][0]["id"] == new and mapped[2]["tool_call_id"] == new
    assert messages[1]["tool_calls"][0]["id"] == OPENAI_ID  # the caller's messages are not changed
    answer = {"choices": [{"message": {"tool_calls": [{"id": new}, {"id": "other"}]}}]}
    unmap_chat(answer, {new: OPENAI_ID})
    assert answer["choices"][0]["message"]["tool_calls"] == [{"id": OPENAI_ID}, {"id": "other"}]
    chunk = {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": new}]}}]}
    unmap_chat(chunk, {new: OPENAI_ID}, "delta")
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["id"] == OPENAI_ID


class ProbePool:
    def __init__(self, answers: list[Any]) -> None:
        self.a = Upstream(0, "http://a/v1", "http://a", transport=None)  # type: ignore[arg-type]
        self.answers = answers
        self.bodies: list[dict[str, Any]] = []

    async def post(self, path: str, body: dict, *, upstream=None, at_root=False, session_id=None) -> Any:
        self.bodies.append(body)
        status = self.answers.pop(0)
        if status != 200:
            raise APIError(status, "refused")
        return {"tokens": [1, 2]}, self.a


@pytest.mark.parametrize(
    ("answers", "expected", "asked_again"),
    [
        ([200], CallIdFormat.KEEP, False),
        ([400, 200], CallIdFormat.ALNUM9, False),
        ([400, 400], CallIdFormat.KEEP, False),
        ([503], CallIdFormat.KEEP, True),  # failing right now: asked again next time
    ],
)
async def test_the_call_id_format_is_learned_from_the_template(
    answers: list[int], expected: CallIdFormat, asked_again: bool
) -> None:
    pool = ProbePool([*answers, 200])
    probe = TemplateProbe(pool, "m", {"enable_thinking": False})  # type: ignore[arg-type]
    assert await probe.call_id_format(pool.a) is expected
    ids = [m["tool_calls"][0]["id"] for b in pool.bodies for m in b["messages"] if m.get("tool_calls")]
    assert ids == [OPENAI_ID, "a1B2c3D4e"][: len(answers)]  # an OpenAI-style id, then a nine-character one
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in pool.bodies)
    await probe.call_id_format(pool.a)
    assert (len(pool.bodies) > len(answers)) is asked_again


async def test_mistral_refusal_learned_once_then_ids_mapped_both_ways(upstream: MockUpstreams) -> None:
    """The template refuses the OpenAI-style id on /tokenize and takes a nine-character one: the
    history goes up mapped, an answer echoing a mapped id comes back as the caller's."""
    mapping = call_id_mapping([OPENAI_ID], CallIdFormat.ALNUM9)

    def tokenize(request: MockRequest) -> MockResponse:
        ids = [
            m["tool_calls"][0]["id"] for m in orjson.loads(request.content)["messages"] if m.get("tool_calls")
        ]
        return MockResponse(
            400 if len(ids[0]) != 9 else 200, json=MISTRAL_ERROR if len(ids[0]) != 9 else {"tokens": [1]}
        )

    probe = upstream.post("http://up1:8000/tokenize").mock(side_effect=tokenize)
    call = {"id": mapping[OPENAI_ID], "type": "function", "function": {"name": "f", "arguments": "{}"}}
    route = upstream.post(f"{UP1}/chat/completions").respond(
        200, json=chat_body(None, tool_calls=[call], finish="tool_calls")
    )
    history = [
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": OPENAI_ID, "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": OPENAI_ID, "output": "r"},
    ]
    async with adapter(upstream) as client:
        for _ in range(2):
            r = await client.post("/v1/responses", json={"input": history})
            assert r.status_code == 200, r.text
    assert probe.call_count == 2  # learned once: the OpenAI-style id refused, the nine-character one taken
    messages = sent(route)["messages"]
    assert messages[1]["tool_calls"][0]["id"] == mapping[OPENAI_ID] == messages[2]["tool_call_id"]
    assert [item["call_id"] for item in r.json()["output"] if item["type"] == "function_call"] == [OPENAI_ID]


async def test_keep_sends_the_ids_as_they_are(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").respond(400, json=MISTRAL_ERROR)
    history = [
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": OPENAI_ID, "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": OPENAI_ID, "output": "r"},
    ]
    async with adapter(upstream, tool_call_id_format="keep") as client:
        r = await client.post("/v1/responses", json={"input": history})
    assert r.status_code == 400 and r.json()["error"]["message"] == MISTRAL_ERROR["error"]["message"]
    assert sent(route)["messages"][2]["tool_call_id"] == OPENAI_ID


# ---- reasoning_field -----------------------------------------------------------------------


def config(**keys: Any) -> VLLMModelConfig:
    return VLLMModelConfig.model_validate({"base_url": [UP1], "api_key": "EMPTY", "model": "m", **keys})


@pytest.mark.parametrize(("env", "expected"), [(None, "both"), ("", "both"), (" reasoning ", "reasoning")])
def test_reasoning_field_defaults_to_the_environment_then_both(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: str
) -> None:
    if env is None:
        monkeypatch.delenv("NEMO_GYM_REASONING_FIELD", raising=False)
    else:
        monkeypatch.setenv("NEMO_GYM_REASONING_FIELD", env)
    assert config().reasoning_field == expected


def test_reasoning_field_config_wins_and_bad_values_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_GYM_REASONING_FIELD", "reasoning")
    assert config(reasoning_field="reasoning_content").reasoning_field == "reasoning_content"
    with pytest.raises(ValueError, match="reasoning_field"):
        config(reasoning_field="reasoning_text")
    monkeypatch.setenv("NEMO_GYM_REASONING_FIELD", "reasoning_text")
    with pytest.raises(ValueError, match="NEMO_GYM_REASONING_FIELD"):
        config()


async def test_history_reasoning_goes_under_the_configured_key(upstream: MockUpstreams) -> None:
    route = upstream.post(f"{UP1}/chat/completions").respond(200, json=chat_body())
    history = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "R"}]},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    async with adapter(upstream, reasoning_field="reasoning") as client:
        assert (await client.post("/v1/responses", json={"input": history})).status_code == 200
    assert sent(route)["messages"][1] == {"role": "assistant", "content": "a", "reasoning": "R"}


# ---- context length ------------------------------------------------------------------------

WORDINGS = {
    "tokens": "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=2049)",
    "characters": "This model's maximum context length is 2048 tokens. However, your prompt contains 300050 characters (more than 32768 characters, which is the upper bound for 2048 input tokens). Please reduce the length of the input prompt. (parameter=input_text, value=300050)",
    "requested": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
    "ids": "Input length (2108) exceeds model's maximum context length (2048).",
    "engine": "The decoder prompt (length 2100) is longer than the maximum model length of 2048. Make sure that `max_model_len` is no smaller than the number of text tokens.",
    "engine, full": "The decoder prompt (length 2048) plus the number of requested output tokens (at least 1) is longer than the maximum model length of 2048. Make sure that `max_model_len` is no smaller than the number of text tokens (prompt + requested output tokens).",
    "full": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
}


def test_every_context_length_wording_is_recognised() -> None:
    for name, message in WORDINGS.items():
        assert is_context_length_error(400, message, {}), name
        assert is_context_length_error(400, message, {"max_tokens": 16}), (
            name
        )  # vLLM caps it to the room left
        assert not is_context_length_error(500, message, {}), name
    # only a caller that asked for no tokens at all made the "got 0" mistake itself
    assert not is_context_length_error(400, WORDINGS["full"], {"max_tokens": 0})
    assert not is_context_length_error(400, WORDINGS["full"], {"max_completion_tokens": 0})
    assert not is_context_length_error(400, "max_tokens=5000 cannot be greater than max_model_len=2048.", {})


def error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}


@pytest.mark.parametrize("name", list(WORDINGS))
async def test_each_wording_is_the_empty_result_on_the_plain_spliced_and_streamed_paths(
    upstream: MockUpstreams, name: str
) -> None:
    upstream.post(f"{UP1}/chat/completions").respond(400, json=error(WORDINGS[name]))
    upstream.post("http://up1:8000/tokenize").mock(
        side_effect=lambda request: MockResponse(
            200,
            json={
                "tokens": render(
                    orjson.loads(request.content)["messages"],
                    orjson.loads(request.content).get("add_generation_prompt", True),
                    bool(orjson.loads(request.content).get("continue_final_message")),
                )
            },
        )
    )
    carried = [
        {"role": "user", "content": "weather?"},
        {
            "type": "function_call",
            "call_id": "a1B2c3D4e",
            "name": "f",
            "arguments": "{}",
            "prompt_token_ids": P1,
            "generation_token_ids": GEN1,
        },
        {"type": "function_call_output", "call_id": "a1B2c3D4e", "output": "cold"},
    ]
    async with adapter(upstream, return_token_id_information=True, prefix_token_ids="required") as client:
        plain = (await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 8})).json()
        spliced = (await client.post("/v1/responses", json={"input": carried, "max_output_tokens": 8})).json()
        streamed = await client.post("/v1/responses", json={"input": carried, "stream": True})
        chat = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": True}
        )
        metrics = (await client.get("/metrics")).text
    for out in (plain, spliced):
        assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
        assert [item["content"][0]["text"] for item in out["output"]] == [""]
    events = [orjson.loads(x[6:]) for x in streamed.text.splitlines() if x.startswith("data: ")]
    assert events[-1]["type"] == "response.incomplete"
    assert '"finish_reason":"length"' in chat.text and chat.text.endswith("data: [DONE]\n\n")
    assert samples(metrics, "nemo_gym_context_length_fallbacks_total") == {"": 4.0}


# ---- splice outcomes on /metrics -------------------------------------------------------------


async def test_splice_outcomes_are_counted_per_upstream(upstream: MockUpstreams) -> None:
    def tokenize(request: MockRequest) -> MockResponse:
        body = orjson.loads(request.content)
        ids = render(
            body["messages"],
            body.get("add_generation_prompt", True),
            bool(body.get("continue_final_message")),
        )
        return MockResponse(200, json={"tokens": ids})

    def generate(request: MockRequest) -> MockResponse:
        body = orjson.loads(request.content)
        given = (body.get("kv_transfer_params") or {}).get("prompt_token_ids")
        return MockResponse(200, json=chat(given or render(body["messages"], True)))

    upstream.post("http://up1:8000/tokenize").mock(side_effect=tokenize)
    upstream.post(f"{UP1}/chat/completions").mock(side_effect=generate)
    carried = [
        {"role": "user", "content": "weather?"},
        {
            "type": "function_call",
            "call_id": "a1B2c3D4e",
            "name": "f",
            "arguments": "{}",
            "prompt_token_ids": P1,
            "generation_token_ids": GEN1,
        },
        {"type": "function_call_output", "call_id": "a1B2c3D4e", "output": "cold"},
    ]
    async with adapter(upstream, return_token_id_information=True) as client:
        ok = (await client.post("/v1/responses", json={"input": carried})).json()["output"][-1]
        changed = (await client.post("/v1/responses", json={"input": carried, "instructions": "S2"})).json()
        text = (await client.get("/metrics")).text
    assert ok["prompt_token_ids"] == SPLICED and ok["token_drift"]["outcome"] == "spliced"
    assert changed["output"][-1]["token_drift"]["outcome"] == "conversation_changed"
    assert samples(text, "nemo_gym_token_splice_total") == {
        f'outcome="{outcome}",upstream="{UP1}"': n
        for outcome, n in (
            ("spliced", 1.0),
            ("conversation_changed", 1.0),
            ("template_unaligned", 0.0),
            ("upstream_ignores", 0.0),
            ("off", 0.0),
        )
    }
    assert samples(text, "nemo_gym_token_drift_total")[f'outcome="fallbacks",upstream="{UP1}"'] == 1.0
