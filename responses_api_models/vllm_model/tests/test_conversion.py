"""Pure conversion rules (SPEC §6.3–6.4), asserted on exact bodies."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from nemo_gym.conversion import (
    ConversionError,
    ConversionOptions,
    UpstreamFormatError,
    chat_to_response,
    responses_to_chat,
)
from nemo_gym.conversion.chat_to_responses import chat_completion_for_caller
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream
from nemo_gym.conversion.think import split_think
from nemo_gym.conversion.tokens import generation_tokens

OPTS = ConversionOptions(model="m")
RAW = ConversionOptions(model="m", uses_reasoning_parser=False)
TOKENS = ConversionOptions(model="m", return_token_id_information=True)


def chat(message: dict, finish: str = "stop", **extra) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        **extra,
    }


# ---- Responses → Chat -------------------------------------------------------------------


def test_string_input_becomes_one_user_message() -> None:
    assert responses_to_chat({"input": "hi", "model": "ignored"}, OPTS) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_null_stream_is_a_plain_request() -> None:
    # NeMo Gym's dataset rows are dumped with every field, `"stream": null` among them.
    assert responses_to_chat({"input": "hi", "stream": None}, OPTS) == responses_to_chat(
        {"input": "hi"}, OPTS
    )


def test_list_and_string_contents() -> None:
    body = responses_to_chat(
        {
            "input": [
                {"role": "system", "content": "sys"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_image", "image_url": "data:x"},
                    ],
                },
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            ]
        },
        OPTS,
    )
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:x"}}],
        },
        {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
    ]


def test_developer_to_system_when_configured() -> None:
    opts = ConversionOptions(model="m", replace_developer_role_with_system=True)
    body = responses_to_chat({"input": [{"role": "developer", "content": "d"}]}, opts)
    assert body["messages"] == [{"role": "system", "content": "d"}]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            },
            {"role": "assistant", "content": "hello"},
        ),
        (
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "R"}]},
            {"role": "assistant", "content": "<think>R</think>"},
        ),
        (
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
        ),
        (
            {"type": "function_call_output", "call_id": "c1", "output": "out"},
            {"role": "tool", "tool_call_id": "c1", "content": "out"},
        ),
        ({"role": "user", "content": "u"}, {"role": "user", "content": "u"}),
    ],
)
def test_each_item_type_alone(item: dict, expected: dict) -> None:
    assert responses_to_chat({"input": [item]}, RAW)["messages"] == [expected]


def test_reasoning_with_several_summaries() -> None:
    item = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "A"}, {"type": "summary_text", "text": " B\n"}],
    }
    assert responses_to_chat({"input": [item]}, RAW)["messages"] == [
        {"role": "assistant", "content": "<think>A</think><think> B\n</think>"}
    ]
    # With the reasoning parser, the blocks move to the reasoning keys (concatenated), content empty.
    assert responses_to_chat({"input": [item]}, OPTS)["messages"] == [
        {"role": "assistant", "content": "", "reasoning": "A B\n", "reasoning_content": "A B\n"}
    ]


MULTI_STEP = [
    {"role": "developer", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need two calls.\n"}]},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
    },
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "function_call_output", "call_id": "c2", "output": "rainy"},
    {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": " both known "}]},
    {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Paris sunny, "},
            {"type": "output_text", "text": "Rome rainy."},
        ],
    },
    {"role": "user", "content": "Thanks"},
]


def test_multi_step_tool_history_merges_byte_for_byte() -> None:
    messages = responses_to_chat({"input": MULTI_STEP}, RAW)["messages"]
    assert messages == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "<think>Need two calls.\n</think>Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
        {"role": "assistant", "content": "<think> both known </think>Paris sunny, Rome rainy."},
        {"role": "user", "content": "Thanks"},
    ]
    parsed = responses_to_chat({"input": MULTI_STEP}, OPTS)["messages"]
    assert parsed[2]["content"] == "Checking." and parsed[2]["reasoning_content"] == "Need two calls.\n"
    assert parsed[2]["reasoning"] == "Need two calls.\n"
    assert parsed[5] == {
        "role": "assistant",
        "content": "Paris sunny, Rome rainy.",
        "reasoning": " both known ",
        "reasoning_content": " both known ",
    }


def test_multi_turn_history() -> None:
    items = [
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "2"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "two"}]},
    ]
    assert responses_to_chat({"input": items, "instructions": "be brief"}, OPTS)["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "2"},
        {"role": "assistant", "content": "two"},
    ]


def test_request_fields() -> None:
    body = responses_to_chat(
        {
            "input": "x",
            "max_output_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "user": "u1",
            "metadata": {"k": "v"},
            "seed": 3,
            "tools": [
                {
                    "type": "function",
                    "name": "f",
                    "description": "d",
                    "parameters": {"type": "object"},
                    "strict": True,
                }
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {
                "format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}
            },
            "top_k": 20,
        },
        OPTS,
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "d",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
        },
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "u1",
        "metadata": {"k": "v"},
        "seed": 3,
        "top_k": 20,
    }


@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        (
            {"input": [{"type": "file_search_call", "id": "x"}]},
            "input[0].type",
            "unsupported input item type 'file_search_call'",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "'input_file'",
        ),
        ({"input": 3}, "input", "'input' is required"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "only function tools"),
        ({"input": "x", "stream": "yes"}, "stream", "'stream' must be true or false"),
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "unsupported message role 'tool'"),
    ],
)
def test_unsupported_input_is_a_clear_400(params: dict, param: str, fragment: str) -> None:
    with pytest.raises(ConversionError) as info:
        responses_to_chat(params, OPTS)
    assert info.value.param == param
    assert fragment in info.value.message


def test_token_carry_back_attaches_to_merged_message_and_never_goes_stale() -> None:
    items = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "f",
            "arguments": "{}",
            "prompt_token_ids": [1, 2],
            "generation_token_ids": [3, 4],
            "generation_log_probs": [-0.1, -0.2],
        },
        {"type": "function_call_output", "call_id": "c1", "output": "o"},
        {"role": "assistant", "content": "final"},
    ]
    messages = responses_to_chat({"input": items}, TOKENS)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "reasoning": "r",
        "reasoning_content": "r",
        "prompt_token_ids": [1, 2],
        "generation_token_ids": [3, 4],
        "generation_log_probs": [-0.1, -0.2],
    }
    assert messages[3] == {"role": "assistant", "content": "final"}  # no stale ids from the earlier turn
    # Without token mode, carried fields are not forwarded.
    assert "prompt_token_ids" not in responses_to_chat({"input": items}, OPTS)["messages"][1]


# ---- Chat → Responses -------------------------------------------------------------------


def test_plain_answer() -> None:
    out = chat_to_response(chat({"content": "Hi there"}), {"input": "x"}, model="m")
    Response.model_validate(out)
    assert out["status"] == "completed" and out["incomplete_details"] is None
    assert [(i["type"], i["content"][0]["text"]) for i in out["output"]] == [("message", "Hi there")]
    assert out["output"][0]["id"].startswith("msg_") and out["id"].startswith("resp_")
    assert out["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    assert (out["tools"], out["tool_choice"], out["parallel_tool_calls"], out["model"]) == (
        [],
        "auto",
        True,
        "m",
    )


def test_think_blocks_become_one_reasoning_item_whitespace_kept() -> None:
    message = {
        "content": "<think> a\n</think>\n\nmiddle <think>b</think>  end\n",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
    }
    out = chat_to_response(chat(message), {"input": "x"}, model="m")
    Response.model_validate(out)
    reasoning, msg, call = out["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [
        {"type": "summary_text", "text": " a\n"},
        {"type": "summary_text", "text": "b"},
    ]
    assert msg["content"][0]["text"] == "\n\nmiddle   end\n"
    assert call == {
        "type": "function_call",
        "id": "call_1",
        "call_id": "call_1",
        "name": "f",
        "arguments": '{"x": 1}',
        "status": "completed",
    }


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_vllm_reasoning_field(field: str) -> None:
    out = chat_to_response(chat({"content": "T", field: "R"}), {"input": "x"}, model="m")
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "R"}]
    assert out["output"][1]["content"][0]["text"] == "T"


def test_reasoning_only_tool_call_has_no_empty_message() -> None:
    message = {
        "content": "",
        "reasoning": "R",
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    out = chat_to_response(chat(message, "tool_calls"), {"input": "x"}, model="m")
    assert [i["type"] for i in out["output"]] == ["reasoning", "function_call"]


def test_empty_output_still_has_a_message() -> None:
    out = chat_to_response(chat({"content": None}), {"input": "x"}, model="m")
    assert [(i["type"], i["content"][0]["text"]) for i in out["output"]] == [("message", "")]


def test_unclosed_think_stays_text_and_length_is_incomplete() -> None:
    out = chat_to_response(
        chat({"content": "<think>never closed"}, "length"), {"input": "x", "max_output_tokens": 5}, model="m"
    )
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["type"] for i in out["output"]] == ["message"]
    assert out["output"][0]["content"][0]["text"] == "<think>never closed"
    assert out["max_output_tokens"] == 5


def test_without_reasoning_parser_tags_stay_and_reasoning_field_is_an_error() -> None:
    out = chat_to_response(
        chat({"content": "<think>R</think>T"}), {"input": "x"}, model="m", uses_reasoning_parser=False
    )
    assert [i["type"] for i in out["output"]] == ["message"] and out["output"][0]["content"][0][
        "text"
    ] == "<think>R</think>T"
    with pytest.raises(UpstreamFormatError, match="drop --reasoning-parser"):
        chat_to_response(
            chat({"content": "T", "reasoning": "R"}), {"input": "x"}, model="m", uses_reasoning_parser=False
        )


def test_echo_fields() -> None:
    request = {
        "input": "x",
        "instructions": "i",
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.1,
        "top_p": 0.2,
        "metadata": {"a": "b"},
        "text": {"format": {"type": "text"}},
    }
    out = chat_to_response(chat({"content": "ok"}), request, model="served")
    Response.model_validate(out)
    for key in (
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "metadata",
        "text",
    ):
        assert out[key] == request[key]
    assert out["model"] == "served"


@pytest.mark.parametrize("padding", ["", " ", "\n", "\n\n  \t", "   \n"])
def test_whitespace_padding_round_trips(padding: str) -> None:
    """Output fed back as input reproduces the chat message the model produced, byte for byte:
    whitespace inside and after the think block is never trimmed."""
    content = f"<think>{padding}R{padding}</think>{padding}T{padding}"
    tool_calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    out = chat_to_response(chat({"content": content, "tool_calls": tool_calls}), {"input": "x"}, model="m")
    again = responses_to_chat({"input": [{"role": "user", "content": "x"}, *out["output"]]}, RAW)["messages"]
    assert again[1] == {"role": "assistant", "content": content, "tool_calls": tool_calls}
    parsed = responses_to_chat({"input": [{"role": "user", "content": "x"}, *out["output"]]}, OPTS)[
        "messages"
    ]
    assert parsed[1] == {
        "role": "assistant",
        "content": f"{padding}T{padding}",
        "tool_calls": tool_calls,
        "reasoning": f"{padding}R{padding}",
        "reasoning_content": f"{padding}R{padding}",
    }


def test_text_before_a_think_block_keeps_its_whitespace_but_follows_the_reasoning() -> None:
    """Responses puts reasoning before the message, so leading text moves after the block."""
    out = chat_to_response(chat({"content": " \n<think>R</think> T"}), {"input": "x"}, model="m")
    again = responses_to_chat({"input": out["output"]}, RAW)["messages"]
    assert again == [{"role": "assistant", "content": "<think>R</think> \n T"}]


def test_output_fed_back_reproduces_chat_messages() -> None:
    message = {
        "content": "<think>plan</think>Calling.",
        "tool_calls": [
            {
                "id": "c9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    out = chat_to_response(chat(message, "tool_calls"), {"input": "x"}, model="m")
    again = responses_to_chat({"input": [{"role": "user", "content": "q"}, *out["output"]]}, RAW)["messages"]
    assert again[1] == {"role": "assistant", **message}


# ---- tokens --------------------------------------------------------------------------------


def _logprobs(ids: list[int]) -> dict:
    return {
        "content": [
            {"token": f"token_id:{i}", "logprob": -0.5 * n, "bytes": [], "top_logprobs": []}
            for n, i in enumerate(ids)
        ]
    }


def test_generation_tokens_from_logprobs() -> None:
    assert generation_tokens({"logprobs": _logprobs([750, 559])}) == ([750, 559], [-0.0, -0.5])


def test_generation_tokens_inline_and_length_mismatch() -> None:
    assert generation_tokens({"logprobs": _logprobs([1, 2]), "token_ids": [1, 2]}) == ([1, 2], [-0.0, -0.5])
    with pytest.raises(UpstreamFormatError, match="2 generation token ids but 1 log-probs"):
        generation_tokens({"logprobs": _logprobs([1]), "token_ids": [1, 2]})
    with pytest.raises(UpstreamFormatError, match="token_id:N"):
        generation_tokens({"logprobs": {"content": [{"token": "hello", "logprob": -1.0}]}})


@pytest.mark.parametrize(
    "tokens",
    [
        ["token_id:1", "hello"],  # one token the upstream did not turn into an id
        ["hello", "token_id:1"],
        ["token_id:1token_id:2"],  # two ids in one entry would misalign the log-probs
        ["token_id:1", ""],
        ["token_id:", "token_id:2"],
        ["token_id:x1"],
        [7],
    ],
)
def test_generation_tokens_rejects_every_malformed_token(tokens: list) -> None:
    content = [{"token": t, "logprob": -1.0} for t in tokens]
    with pytest.raises(UpstreamFormatError, match="token_id:N"):
        generation_tokens({"logprobs": {"content": content}})


@pytest.mark.parametrize(
    "entry",
    [
        {"token": "token_id:1"},
        {"token": "token_id:1", "logprob": None},
        {"token": "token_id:1", "logprob": "x"},
    ],
)
def test_generation_tokens_rejects_missing_logprobs(entry: dict) -> None:
    with pytest.raises(UpstreamFormatError, match="numeric 'logprob'"):
        generation_tokens({"logprobs": {"content": [entry]}})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**31), st.floats(-1e9, 0, allow_nan=False)), max_size=300))
def test_generation_tokens_matches_a_per_entry_reading(pairs: list[tuple[int, float]]) -> None:
    content = [
        {"token": f"token_id:{i}", "logprob": lp, "bytes": [1, 2], "top_logprobs": []} for i, lp in pairs
    ]
    assert generation_tokens({"logprobs": {"content": content}}) == (
        [i for i, _ in pairs],
        [lp for _, lp in pairs],
    )


_THINK_REGEX = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(["<think>", "</think>", "a", " ", "\n", "<", ">", "think", "é"]), max_size=40)
)
def test_split_think_matches_the_lazy_regex(parts: list[str]) -> None:
    text = "".join(parts)
    blocks = _THINK_REGEX.findall(text)
    expected = (blocks, _THINK_REGEX.sub("", text)) if blocks else ([], text)
    assert split_think(text) == expected


def test_token_info_goes_on_last_item() -> None:
    message = {
        "content": "<think>r</think>t",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    info = {"prompt_token_ids": [1], "generation_token_ids": [2, 3], "generation_log_probs": [-1.0, -2.0]}
    out = chat_to_response(chat(message), {"input": "x"}, model="m", token_info=info)
    assert [k for k in info if k in out["output"][-1]] == list(info)
    assert all("prompt_token_ids" not in item for item in out["output"][:-1])


def test_chat_endpoint_output_folds_reasoning_into_content() -> None:
    out = chat_completion_for_caller(
        chat({"content": "T", "reasoning": "R"}), model="m", uses_reasoning_parser=True, token_info=None
    )
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "<think>R</think>T"}


@pytest.mark.parametrize(
    ("field", "keys"),
    [
        ("both", {"reasoning", "reasoning_content"}),
        ("reasoning", {"reasoning"}),
        ("reasoning_content", {"reasoning_content"}),
    ],
)
def test_reasoning_field_picks_the_keys_history_reasoning_goes_under(field: str, keys: set[str]) -> None:
    opts = ConversionOptions(model="m", reasoning_field=field)
    items = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>R</think>T"}]
    message = responses_to_chat({"input": items}, opts)["messages"][1]
    assert message == {"role": "assistant", "content": "T", **dict.fromkeys(keys, "R")}
    # a chat caller's own key (vLLM's `reasoning` echoed, or `reasoning_content`) moves to the same keys
    for key in ("reasoning", "reasoning_content"):
        chat = chat_messages_for_upstream([{"role": "assistant", "content": "T", key: "R"}], opts)
        assert chat == [{"role": "assistant", "content": "T", **dict.fromkeys(keys, "R")}]
