"""Streaming conversion: a chat stream, accumulated, equals the non-streaming chat answer, and
the Responses events, read by the `openai` client's own stream helpers, end in exactly the
object the non-streaming path returns for the same upstream answer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from nemo_gym.conversion.chat_stream import ChatAccumulator, ChatStream, chat_error_chunk, empty_chat_chunks
from nemo_gym.conversion.chat_to_responses import (
    REASONING_PARSER_MISCONFIGURED,
    OutputIds,
    chat_completion_for_caller,
    chat_to_response,
    empty_chat_completion,
    empty_response,
)
from nemo_gym.conversion.errors import UpstreamFormatError
from nemo_gym.conversion.responses_stream import ResponsesStream, empty_response_events
from nemo_gym.conversion.sse import DONE_BYTES, encode_chunk, encode_chunks, iter_events
from nemo_gym.conversion.think import CLOSE, OPEN, TEXT, THINK, ThinkSplitter, split_think
from nemo_gym.exceptions import UpstreamError
from nemo_gym.testing.checks import (
    EVENT,
    check_events,
    openai_client_streaming,
    strip_parsed,
    through_openai_client,
)

WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
REQUEST = {"model": "caller-model", "input": "hi", "max_output_tokens": 64, "temperature": 0.5}
TOKENS = "chat_stream_usage_logprobs_tokenids"


def capture(name: str) -> list[dict[str, Any]]:
    events = list(iter_events([(WIRE / f"{name}.sse").read_bytes()]))
    assert events[-1].done
    return [event.json() for event in events[:-1]]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def upstream(
    content: list[str] = (),  # type: ignore[assignment]
    *,
    reasoning: list[str] = (),  # type: ignore[assignment]
    calls: list[list[dict[str, Any]]] = (),  # type: ignore[assignment]
    finish: str = "stop",
    key: str = "reasoning",
) -> list[dict[str, Any]]:
    """A stream as vLLM sends it: role chunk, reasoning deltas, content deltas, tool-call deltas,
    an empty finish chunk, a usage chunk."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({key: piece}) for piece in reasoning]
    chunks += [chunk({"content": piece}) for piece in content]
    chunks += [chunk({"content": None, "tool_calls": pieces}) for pieces in calls]
    chunks.append(chunk({}, finish))
    usage = {"prompt_tokens": 7, "total_tokens": 12, "completion_tokens": 5}
    chunks.append({**chunk(), "choices": [], "usage": usage})
    return chunks


def nonstreaming(
    content: str | None, *, reasoning: str | None = None, calls: list | None = None, finish: str = "stop"
) -> dict[str, Any]:
    """The non-streaming answer the same generation gives."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "total_tokens": 12, "completion_tokens": 5},
    }


def two_calls() -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    pieces = [
        [{"id": "call-a", "type": "function", "index": 0, "function": {"name": "get_weather"}}],
        [{"index": 0, "function": {"arguments": '{"ci'}}],
        [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}],
        [{"id": "call-b", "type": "function", "index": 1, "function": {"name": "get_time", "arguments": ""}}],
        [{"index": 1, "function": {"arguments": "{}"}}],
    ]
    whole = [
        {
            "id": "call-a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call-b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    return pieces, whole


# ---- chat ---------------------------------------------------------------------------------


def run_chat(chunks: list[dict[str, Any]], **options: Any) -> tuple[list[dict[str, Any]], ChatStream, Any]:
    options.setdefault("uses_reasoning_parser", True)
    stream = ChatStream(model="served-model", **options)
    out = [sent for c in copy.deepcopy(chunks) for sent in stream.feed(c)]
    info = stream.token_info() if stream.token_mode else None
    out += stream.finish(info)
    return out, stream, info


def accumulate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    acc = ChatAccumulator()
    for c in chunks:
        acc.add(c)
    return acc.result()


def assert_chat_equivalent(chunks: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
    out, stream, info = run_chat(chunks, **options)
    expected = chat_completion_for_caller(
        stream.accumulated.result(),
        model="served-model",
        uses_reasoning_parser=options.get("uses_reasoning_parser", True),
        token_info=info,
    )
    assert accumulate(out) == expected
    assert all(c["model"] == "served-model" for c in out)
    # The openai client parses every chunk we send, and its own accumulator agrees on the message.
    state = ChatCompletionStreamState()
    for c in out:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    message = state.current_completion_snapshot.choices[0].message
    assert message.content == expected["choices"][0]["message"]["content"]
    calls = expected["choices"][0]["message"].get("tool_calls") or []
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls
    ]
    return out


@pytest.mark.parametrize(
    "name", ["chat_stream", TOKENS, "reasoning_r1_chat_stream_biased", "tools_required_strict_enum_stream"]
)
@pytest.mark.parametrize("token_mode", [False, True])
def test_chat_capture_accumulates_to_the_nonstreaming_conversion(name: str, token_mode: bool) -> None:
    if token_mode and name != TOKENS:
        with pytest.raises(UpstreamFormatError, match="no logprobs"):
            run_chat(capture(name), token_mode=True)
        return
    assert_chat_equivalent(capture(name), token_mode=token_mode)


def test_chat_token_fields_on_the_last_chunk_with_a_choice() -> None:
    out, stream, info = run_chat(capture(TOKENS), token_mode=True)
    assert info == {
        "prompt_token_ids": [1666, 486, 198, 880, 1667, 198, 1666, 750, 198],
        "generation_token_ids": [1188, 244, 1023],
        "generation_log_probs": [-7.553122520446777, -7.316368579864502, -7.5192341804504395],
    }
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in out] == [
        {"role": "assistant", "content": ""},
        {"content": " 851"},
        {},
        {"content": "\ufffd70", **info},
        None,
    ]
    assert out[-1]["usage"] == {"prompt_tokens": 9, "total_tokens": 12, "completion_tokens": 3}
    assert out[3]["choices"][0]["finish_reason"] == "length"
    message = accumulate(out)["choices"][0]["message"]
    assert {k: message[k] for k in info} == info
    # Prompt ids from /tokenize win over the stream's own.
    assert stream.token_info([1, 2])["prompt_token_ids"] == [1, 2]


def test_chat_token_mode_holds_only_the_end() -> None:
    stream = ChatStream(model="m", uses_reasoning_parser=True, token_mode=True)
    chunks = capture(TOKENS)
    assert [len(stream.feed(c)) for c in chunks] == [1, 1, 1, 0, 0]
    assert len(stream.finish(stream.token_info())) == 2


def test_chat_reasoning_field_becomes_leading_think_content() -> None:
    out = assert_chat_equivalent(capture("reasoning_r1_chat_stream_biased"))
    assert [c["choices"][0]["delta"].get("content") for c in out if c["choices"]] == [
        "",
        "<think> 894",
        "quest",
        " 23",
        "</think>Been",
        "\ufffd 602",
        "18",
    ]
    assert not any("reasoning" in c["choices"][0]["delta"] for c in out if c["choices"])


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_chat_reasoning_closed_by_a_tool_call_or_the_end(key: str) -> None:
    pieces, _ = two_calls()
    out = assert_chat_equivalent(upstream(reasoning=["a", "", "b"], calls=pieces, key=key))
    assert accumulate(out)["choices"][0]["message"]["content"] == "<think>ab</think>"
    out = assert_chat_equivalent(upstream(reasoning=["cut"], finish="length", key=key))
    assert out[-2]["choices"][0]["delta"] == {"content": "</think>"}
    assert accumulate(out)["choices"][0]["message"]["content"] == "<think>cut</think>"
    # Reasoning and content in one delta (vLLM does this when </think> falls inside a step).
    both = upstream(["ignored"])
    both[1]["choices"][0]["delta"] = {key: "r", "content": "c"}
    assert accumulate(assert_chat_equivalent(both))["choices"][0]["message"]["content"] == "<think>r</think>c"


def test_chat_stream_that_ends_inside_reasoning_without_a_finish_chunk() -> None:
    chunks = upstream(reasoning=["x"])[:2]
    out = assert_chat_equivalent(chunks)
    assert out[-1]["choices"][0]["delta"] == {"content": "</think>"}


def test_chat_reasoning_without_reasoning_parser_is_a_misconfiguration() -> None:
    with pytest.raises(UpstreamFormatError) as caught:
        run_chat(capture("reasoning_r1_chat_stream_biased"), uses_reasoning_parser=False)
    assert caught.value.message == REASONING_PARSER_MISCONFIGURED
    # Think tags in the content pass as they are.
    out = assert_chat_equivalent(upstream(["<think>a", "</think>b"]), uses_reasoning_parser=False)
    assert accumulate(out)["choices"][0]["message"]["content"] == "<think>a</think>b"


def test_chat_usage_chunk_dropped_when_not_asked() -> None:
    out, stream, _ = run_chat(upstream(["a"]), send_usage=False)
    assert all(c["choices"] for c in out)
    assert stream.accumulated.result()["usage"] == {
        "prompt_tokens": 7,
        "total_tokens": 12,
        "completion_tokens": 5,
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"error": {"message": "boom", "type": "InternalServerError", "param": None, "code": 500}},
            500,
            "boom",
        ),
        (
            {"object": "error", "message": "old", "type": "BadRequestError", "param": None, "code": 400},
            400,
            "old",
        ),
        ({"error": "Unauthorized"}, 502, "Unauthorized"),
    ],
)
def test_error_event_in_the_upstream_stream(body: dict[str, Any], status: int, message: str) -> None:
    for stream in (
        ChatStream(model="m", uses_reasoning_parser=True),
        ResponsesStream(REQUEST, model="m"),
    ):
        stream.feed(chunk({"role": "assistant", "content": ""}))
        with pytest.raises(UpstreamError) as caught:
            stream.feed(body)
        assert (caught.value.status, caught.value.message) == (status, message)


def test_accumulator_shape() -> None:
    pieces, whole = two_calls()
    chunks = upstream(["Hel", "lo"], reasoning=["r"], calls=pieces)
    chunks[0]["prompt_token_ids"] = [1, 2]
    chunks[-1]["system_fingerprint"] = "fp"
    chunks[-2]["choices"][0]["stop_reason"] = None
    expected = nonstreaming("Hello", reasoning="r", calls=whole)
    expected["choices"][0]["stop_reason"] = None
    assert accumulate(chunks) == {**expected, "prompt_token_ids": [1, 2], "system_fingerprint": "fp"}
    assert accumulate([chunk({"content": None})])["choices"][0]["message"]["content"] is None


# ---- think splitting ------------------------------------------------------------------------


def split_pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(text))), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def splitter_result(pieces: list[str]) -> tuple[list[str], str, bool]:
    splitter = ThinkSplitter()
    steps = [step for piece in pieces for step in splitter.feed(piece)] + splitter.flush()
    blocks: list[str] = []
    text: list[str] = []
    open_block: list[str] | None = None
    for kind, value in steps:
        if kind == OPEN:
            open_block = []
        elif kind == THINK:
            assert open_block is not None
            open_block.append(value)
        elif kind == CLOSE:
            blocks.append("".join(open_block or []))
            open_block = None
        else:
            assert kind == TEXT and open_block is None
            text.append(value)
    if open_block is not None:  # unclosed: split_think keeps it as text
        text.append("<think>" + "".join(open_block))
    return blocks, "".join(text), splitter.in_block


PIECES = ["<think>", "</think>", "<", "think", ">", "</", "a", "\n", " ", "<thi", "nk>"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14), st.lists(st.integers(0, 80), max_size=8))
def test_think_splitter_equals_split_think_on_any_cut(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    blocks, rest, _ = splitter_result(split_pieces(text, cuts))
    assert (blocks, rest) == split_think(text)


# ---- Responses ------------------------------------------------------------------------------


def run_responses(
    chunks: list[dict[str, Any]], *, token_mode: bool = False, **options: Any
) -> tuple[list[dict[str, Any]], ResponsesStream, dict[str, Any] | None]:
    stream = ResponsesStream(REQUEST, model="served-model", **options)
    events = stream.start()
    for c in copy.deepcopy(chunks):
        events += stream.feed(c)
    info = stream.token_info() if token_mode else None
    events += stream.finish(info)
    return events, stream, info


def assert_responses_equivalent(
    chunks: list[dict[str, Any]],
    expected_chat: dict[str, Any] | None = None,
    *,
    token_mode: bool = False,
    uses_reasoning_parser: bool = True,
    same_order: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The final object equals `chat_to_response` of the non-streaming answer (given, or the
    accumulated stream for captures), and the openai client ends in it. Returns the default
    run (`response.incomplete` for a cut answer)."""
    runs = []
    for as_completed in (False, True):
        events, stream, info = run_responses(
            chunks,
            token_mode=token_mode,
            uses_reasoning_parser=uses_reasoning_parser,
            incomplete_as_completed=as_completed,
        )
        source = expected_chat if expected_chat is not None else stream.accumulated.result()
        expected = chat_to_response(
            source,
            REQUEST,
            model="served-model",
            uses_reasoning_parser=uses_reasoning_parser,
            token_info=info,
            ids=stream.ids,
        )
        assert stream.response == expected
        incomplete = expected["status"] == "incomplete"
        terminal = "response.incomplete" if incomplete and not as_completed else "response.completed"
        check_events(events, expected, terminal=terminal, same_order=same_order)
        seen, final = through_openai_client(events)
        assert [e.type for e in seen] == [e["type"] for e in events]
        if terminal == "response.completed":
            assert strip_parsed(final.to_dict()) == expected
        else:
            assert final is None and seen[-1].response.to_dict() == expected
        runs.append((events, expected))
    return runs[0]


@pytest.mark.parametrize(
    "name", ["chat_stream", TOKENS, "reasoning_r1_chat_stream_biased", "tools_required_strict_enum_stream"]
)
def test_responses_from_captures(name: str) -> None:
    events, final = assert_responses_equivalent(capture(name), token_mode=name == TOKENS)
    kinds = [e["type"] for e in events]
    if name == "reasoning_r1_chat_stream_biased":
        assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
        assert final["output"][0]["summary"] == [{"type": "summary_text", "text": " 894quest 23"}]
        assert kinds.count("response.reasoning_summary_text.delta") == 3
        assert kinds.count("response.output_text.delta") == 3
    if name == "tools_required_strict_enum_stream":
        assert [item["name"] for item in final["output"]] == ["get_weather", "get_weather"]
        assert kinds.count("response.function_call_arguments.delta") == 21
        assert final["status"] == "completed"
    if name == TOKENS:
        assert final["output"][-1]["generation_token_ids"] == [1188, 244, 1023]
        assert final["output"][-1]["prompt_token_ids"] == [1666, 486, 198, 880, 1667, 198, 1666, 750, 198]


def test_responses_capture_event_sequence() -> None:
    events, final = assert_responses_equivalent(capture("reasoning_r1_chat_stream_biased"))
    rs, msg = final["output"][0]["id"], final["output"][1]["id"]
    assert [(e["type"], e.get("output_index"), e.get("delta")) for e in events] == [
        ("response.created", None, None),
        ("response.in_progress", None, None),
        ("response.output_item.added", 0, None),
        ("response.reasoning_summary_part.added", 0, None),
        ("response.reasoning_summary_text.delta", 0, " 894"),
        ("response.reasoning_summary_text.delta", 0, "quest"),
        ("response.reasoning_summary_text.delta", 0, " 23"),
        ("response.reasoning_summary_text.done", 0, None),
        ("response.reasoning_summary_part.done", 0, None),
        ("response.output_item.added", 1, None),
        ("response.content_part.added", 1, None),
        ("response.output_text.delta", 1, "Been"),
        ("response.output_text.delta", 1, "\ufffd 602"),
        ("response.output_text.delta", 1, "18"),
        ("response.output_item.done", 0, None),
        ("response.output_text.done", 1, None),
        ("response.content_part.done", 1, None),
        ("response.output_item.done", 1, None),
        ("response.incomplete", None, None),
    ]
    assert events[2]["item"] == {"id": rs, "type": "reasoning", "summary": []}
    assert events[9]["item"] == {
        "id": msg,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert events[10]["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


THINK_TEXTS = [
    "<think>plan</think>answer",
    "<think>a</think>\n\n<think>b</think>tail",
    "<think></think>x",
    "<think>only</think>",
    "<think>cut off",
    "plain</think>text<thin",
    "a<thinkb</think",
]


@pytest.mark.parametrize("text", THINK_TEXTS)
@pytest.mark.parametrize("uses_reasoning_parser", [True, False])
def test_responses_think_in_content_split_at_every_position(text: str, uses_reasoning_parser: bool) -> None:
    finish = "length" if "cut" in text else "stop"
    for cut in range(len(text) + 1):
        pieces = [p for p in (text[:cut], text[cut:]) if p]
        assert_responses_equivalent(
            upstream(pieces, finish=finish),
            nonstreaming(text, finish=finish),
            uses_reasoning_parser=uses_reasoning_parser,
        )


def test_responses_text_before_a_think_block_streams_first_but_ends_in_nonstreaming_order() -> None:
    """The stream cannot hold text back for a think block that may never come: the message is
    announced first; the final object has the reasoning item first, as unstreamed."""
    text = "Sure. <think>why</think>Done."
    _, final = assert_responses_equivalent(upstream(list(text)), nonstreaming(text), same_order=False)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][1]["content"][0]["text"] == "Sure. Done."


def test_responses_think_tags_cut_into_single_characters() -> None:
    text = "<think>step one</think>The answer.<think>more</think>!"
    events, final = assert_responses_equivalent(upstream(list(text)), nonstreaming(text))
    assert final["output"][0]["summary"] == [
        {"type": "summary_text", "text": "step one"},
        {"type": "summary_text", "text": "more"},
    ]
    assert final["output"][1]["content"][0]["text"] == "The answer.!"
    # No tag text ever reaches a delta.
    deltas = "".join(e.get("delta", "") for e in events)
    assert "<" not in deltas and ">" not in deltas


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_responses_reasoning_field_content_and_several_tool_calls(key: str) -> None:
    pieces, whole = two_calls()
    events, final = assert_responses_equivalent(
        upstream(
            ["Let me ", "check."], reasoning=["I need ", "tools."], calls=pieces, finish="tool_calls", key=key
        ),
        nonstreaming("Let me check.", reasoning="I need tools.", calls=whole, finish="tool_calls"),
    )
    assert [item["type"] for item in final["output"]] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert [
        (e["output_index"], e["delta"])
        for e in events
        if e["type"] == "response.function_call_arguments.delta"
    ] == [
        (2, '{"ci'),
        (2, 'ty": "Paris"}'),
        (3, "{}"),
    ]


def test_responses_tool_call_id_and_name_after_its_first_piece() -> None:
    late = [
        [{"index": 0, "function": {"arguments": '{"a"'}}],
        [{"index": 0, "id": "call-x", "type": "function", "function": {"name": "f", "arguments": ": 1}"}}],
    ]
    whole = [{"id": "call-x", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    events, _ = assert_responses_equivalent(upstream(calls=late), nonstreaming(None, calls=whole))
    assert [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"] == [
        '{"a": 1}'
    ]


def test_responses_token_mode_fields_on_the_last_item() -> None:
    pieces, whole = two_calls()
    chunks = upstream(["hi"], reasoning=["r"], calls=pieces)
    chunks[0]["prompt_token_ids"] = [5, 6]
    for index, c in enumerate(chunks[1:-1], start=1):
        c["choices"][0]["logprobs"] = {"content": [{"token": f"token_id:{index}", "logprob": -index / 10}]}
    generated = len(chunks) - 2
    chunks[-1]["usage"] = {"prompt_tokens": 2, "total_tokens": 2 + generated, "completion_tokens": generated}
    expected_chat = {**nonstreaming("hi", reasoning="r", calls=whole), "usage": chunks[-1]["usage"]}
    events, final = assert_responses_equivalent(chunks, expected_chat, token_mode=True)
    assert final["output"][-1]["generation_token_ids"] == list(range(1, len(chunks) - 1))
    assert final["output"][-1]["prompt_token_ids"] == [5, 6]
    assert all("generation_token_ids" not in item for item in final["output"][:-1])
    # A usage count that disagrees with the tokens streamed (vLLM without return_token_ids) is refused.
    chunks[-1]["usage"] = {**chunks[-1]["usage"], "completion_tokens": generated + 2}
    with pytest.raises(UpstreamFormatError, match="its usage counts"):
        run_responses(chunks, token_mode=True)


def test_responses_reasoning_without_parser_is_a_misconfiguration() -> None:
    stream = ResponsesStream(REQUEST, model="m", uses_reasoning_parser=False)
    with pytest.raises(UpstreamFormatError):
        for c in capture("reasoning_r1_chat_stream_biased"):
            stream.feed(c)


def test_responses_empty_generation_still_has_a_message() -> None:
    _, final = assert_responses_equivalent(upstream([]), nonstreaming(""))
    assert [item["type"] for item in final["output"]] == ["message"]


def test_responses_failure_mid_stream() -> None:
    stream = ResponsesStream(REQUEST, model="served-model")
    events = stream.start()
    for c in upstream(["partial "], reasoning=["r"])[:3]:
        events += stream.feed(c)
    events += stream.fail("upstream http://u/v1 dropped the connection")
    for event in events:
        EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    error, failed = events[-2], events[-1]
    assert error == {
        "type": "error",
        "sequence_number": len(events) - 2,
        "code": "server_error",
        "message": "upstream http://u/v1 dropped the connection",
        "param": None,
    }
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "upstream http://u/v1 dropped the connection",
    }
    assert [item["type"] for item in failed["response"]["output"]] == ["reasoning", "message"]
    assert failed["response"]["output"][1]["content"][0]["text"] == "partial "
    seen, final = through_openai_client(events)
    assert final is None and [e.type for e in seen][-2:] == ["error", "response.failed"]


@pytest.mark.parametrize("as_completed", [False, True])
def test_context_length_exceeded_as_events(as_completed: bool) -> None:
    ids = OutputIds()
    stream = ResponsesStream(REQUEST, model="served-model", ids=ids, incomplete_as_completed=as_completed)
    events = stream.context_length_exceeded()
    expected = empty_response(REQUEST, "served-model", ids, events[0]["response"]["created_at"])
    assert stream.response == expected
    check_events(events, expected, terminal="response.completed" if as_completed else "response.incomplete")
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed" if as_completed else "response.incomplete",
    ]
    bare = empty_response_events(REQUEST, model="served-model")
    assert bare[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert {k: v for k, v in bare[-1]["response"].items() if k not in ("id", "created_at", "output")} == {
        k: v for k, v in expected.items() if k not in ("id", "created_at", "output")
    }


def test_output_ids_default_to_fresh_and_nonstreaming_unchanged() -> None:
    chat = nonstreaming("<think>r</think>t")
    a, b = chat_to_response(chat, REQUEST, model="m"), chat_to_response(chat, REQUEST, model="m")
    assert a["id"] != b["id"] and a["output"][0]["id"] != b["output"][0]["id"]
    ids = OutputIds(response="resp_x", reasoning="rs_x", message="msg_x")
    fixed = chat_to_response(chat, REQUEST, model="m", ids=ids)
    assert (fixed["id"], fixed["output"][0]["id"], fixed["output"][1]["id"]) == ("resp_x", "rs_x", "msg_x")
    assert {
        **a,
        "id": "resp_x",
        "output": [{**a["output"][0], "id": "rs_x"}, {**a["output"][1], "id": "msg_x"}],
    } == fixed


@pytest.mark.parametrize("include_usage", [False, True])
def test_empty_chat_stream_adds_up_to_the_empty_completion(include_usage: bool) -> None:
    chunks = empty_chat_chunks("served-model", include_usage=include_usage)
    whole = empty_chat_completion("served-model")
    got = accumulate(chunks)
    assert got["choices"] == [{**whole["choices"][0], "message": {"role": "assistant", "content": None}}]
    assert got["usage"] == (whole["usage"] if include_usage else None)
    assert {c["id"] for c in chunks} == {got["id"]} and got["model"] == "served-model"
    state = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    assert state.current_completion_snapshot.choices[0].finish_reason == "length"


def test_chat_error_chunk_is_raised_by_the_openai_client() -> None:
    body = encode_chunks([chunk({"role": "assistant", "content": "par"})])
    body += encode_chunk(chat_error_chunk("upstream dropped", code=502)) + DONE_BYTES
    client = openai_client_streaming(body)
    seen = []
    with pytest.raises(openai.APIError, match="upstream dropped"):
        for c in client.chat.completions.create(model="x", messages=[], stream=True):
            seen.append(c.choices[0].delta.content)
    assert seen == ["par"]
