"""The adapter's request contract next to the strict protocol model's.

`responses_to_chat` checks requests by hand instead of validating them through
`NeMoGymResponseCreateParamsNonStreaming` (its module docstring says why). These tests pin where
the two contracts differ, so that a change to either one is a decision, not an accident, and
where they agree (a request both accept converts to the same chat body either way).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nemo_gym.conversion import ConversionError, ConversionOptions, responses_to_chat
from nemo_gym.conversion.think import ThinkSplit, ThinkSplitter, ThinkStep, split_think
from nemo_gym.conversion.tokens import GenerationTokens, generation_tokens
from nemo_gym.protocol.responses import NeMoGymResponseCreateParamsNonStreaming as StrictParams

OPTS = ConversionOptions(model="m")
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["parameters"]}}
INPUT = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "cold"},
]
CHAT_MESSAGES = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "cold"},
]


def _strict_errors(body: dict) -> list[tuple]:
    with pytest.raises(ValidationError) as caught:
        StrictParams.model_validate(body)
    return [(error["loc"], error["type"]) for error in caught.value.errors()]


def test_a_request_both_accept_converts_the_same_from_either_shape():
    body = {"input": INPUT, "tools": [{**TOOL, "strict": True}], "temperature": 0.5}
    validated = StrictParams.model_validate(body).model_dump(exclude_unset=True, mode="json")
    expected = {
        "model": "m",
        "messages": CHAT_MESSAGES,
        "tools": [{"type": "function", "function": {**CHAT_TOOL["function"], "strict": True}}],
        "temperature": 0.5,
    }
    assert responses_to_chat(body, OPTS) == expected
    assert responses_to_chat(validated, OPTS) == expected


def test_the_adapter_takes_vllm_sampling_extras_the_strict_model_forbids():
    body = {"input": "hi", "top_k": 5, "min_p": 0.1}
    assert _strict_errors(body) == [(("top_k",), "extra_forbidden"), (("min_p",), "extra_forbidden")]
    assert responses_to_chat(body, OPTS) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 5,
        "min_p": 0.1,
    }


def test_the_adapter_takes_a_function_tool_without_strict_and_a_stream_flag():
    body = {"input": "hi", "tools": [TOOL], "stream": True}
    errors = _strict_errors(body)
    assert (("tools", 0, "FunctionToolParam", "strict"), "missing") in errors
    assert (("stream",), "literal_error") in errors
    assert responses_to_chat(body, OPTS) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [CHAT_TOOL],
    }


def test_the_adapter_refuses_hosted_tools_the_strict_model_accepts_with_one_named_error():
    body = {"input": "hi", "tools": [{"type": "web_search"}]}
    assert StrictParams.model_validate(body).tools == [{"type": "web_search"}]
    with pytest.raises(ConversionError) as caught:
        responses_to_chat(body, OPTS)
    assert str(caught.value) == (
        "unsupported tool type 'web_search' at 'tools[0]': only function tools are supported"
    )
    assert caught.value.param == "tools[0].type"


def test_the_adapter_refuses_hosted_items_the_strict_model_accepts():
    item = {"type": "mcp_list_tools", "id": "l1", "server_label": "s", "tools": []}
    assert (
        type(StrictParams.model_validate({"input": [item]}).input[0]).__name__
        == "NeMoGymResponseMcpListTools"
    )
    with pytest.raises(ConversionError) as caught:
        responses_to_chat({"input": [item]}, OPTS)
    assert str(caught.value) == "unsupported input item type 'mcp_list_tools' at 'input[0].type'"
    assert caught.value.param == "input[0].type"


def test_typed_results_still_unpack_as_tuples():
    split = split_think("<think>r</think>answer")
    assert split == ThinkSplit(blocks=["r"], rest="answer")
    blocks, rest = split
    assert (blocks, rest) == (["r"], "answer")
    assert ThinkSplitter().feed("a<think>b") == [
        ThinkStep("text", "a"),
        ThinkStep("open", ""),
        ThinkStep("think", "b"),
    ]
    tokens = generation_tokens({"logprobs": {"content": [{"token": "token_id:7", "logprob": -0.25}]}})
    assert tokens == GenerationTokens(ids=[7], log_probs=[-0.25])
    assert tokens.ids == [7]
