"""Prefix splicing on a Qwen/Hermes chat template (tiny-qwen2 ids from a real vLLM /tokenize
capture, tests/fixtures/vllm_wire/tokenize_tool_history.json): the spliced prompt is exactly the
carried ids, the closing tokens the generation did not write, and the rendering of what followed.

This ChatML template renders a message the same whatever follows it, so the rendering up to and
including the assistant turn is the capture's first 348 ids (through that turn's `<|im_end|>\n`);
templates that do not are in test_family_splice.py, on their own captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_gym.conversion.prefix import (
    CarriedTokens,
    SpliceError,
    SpliceOutcome,
    carried_tokens,
    divergence,
    drift_report,
    new_messages_start,
    opening_mismatch,
    splice,
)

WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
# [system + tools, user "Weather in Paris?", assistant tool call, tool result] + generation prompt
T = json.loads((WIRE / "tokenize_tool_history.json").read_text())["tokens"]
IM_START, IM_END, NL, ASSISTANT, USER = 1666, 1667, 198, 750, 486
THINK, END_THINK = 1668, 1669
CLOSING = [IM_END, NL]

P1 = T[:325]  # the first turn's prompt: ends with the generation prompt
THROUGH = T[:348]  # [system + tools, user, assistant tool call], finished
RENDERED_CALL = T[
    325:346
]  # <tool_call>\n{"name": "get_weather", "arguments": {"unit": "celsius"}}\n</tool_call>
# What the template renders after the assistant turn's <|im_end|>: the tool result as a user turn,
# then the generation prompt.
TAIL = [
    198,
    1666,
    486,
    198,
    1672,
    198,
    303,
    83,
    334,
    79,
    274,
    220,
    17,
    16,
    92,
    198,
    1673,
    1667,
    198,
    1666,
    750,
    198,
]
# Guided decoding wrote the key "unit" as four one-letter tokens (u, n, i, t); the template's
# re-rendering tokenizes it as one (325).
GENERATED_CALL = [
    1670,
    198,
    303,
    382,
    274,
    269,
    384,
    62,
    381,
    302,
    269,
    385,
    274,
    304,
    84,
    77,
    72,
    83,
    274,
    269,
    658,
    387,
    198,
    1671,
]


def carried(prompt: list[int], gen: list[int]) -> CarriedTokens:
    return CarriedTokens(prompt, gen, None, 2)


def test_capture_layout() -> None:
    assert P1[-3:] == [IM_START, ASSISTANT, NL]
    assert RENDERED_CALL[0] == 1670 and RENDERED_CALL[-1] == 1671 and T[346] == IM_END
    assert T[347:] == TAIL and THROUGH[-2:] == CLOSING
    assert new_messages_start(THROUGH, T, CLOSING) == 348


def test_tool_call_turn_keeps_the_generated_tokens() -> None:
    gen = [*GENERATED_CALL, IM_END]
    out = splice(carried(P1, gen), THROUGH, T, CLOSING)
    assert out == P1 + [*GENERATED_CALL, 1667] + [
        198, 1666, 486, 198, 1672, 198, 303, 83, 334, 79, 274, 220, 17, 16, 92, 198, 1673, 1667, 198,
        1666, 750, 198,
    ]  # fmt: skip
    assert out != T  # the plain rendering drifted; the splice did not
    assert divergence(P1 + gen, T) == {"index": 339, "expected": 84, "actual": 325}
    assert divergence(P1 + gen, out) is None


def test_generation_cut_off_gets_the_templates_whole_closing() -> None:
    gen = [1670, 198, 303, 382]  # finish_reason length, inside the tool call
    out = splice(carried(P1, gen), THROUGH, T, CLOSING)
    assert out == P1 + [1670, 198, 303, 382, 1667, 198] + TAIL[1:]


def test_another_stop_id_stands_for_the_end_of_turn_token() -> None:
    gen = [*GENERATED_CALL, 151643]  # stopped on <|endoftext|>, another of the model's stop ids
    assert splice(carried(P1, gen), THROUGH, T, CLOSING, {151643}) == P1 + gen + TAIL
    # not known as a stop id: a cut-off turn, the whole closing follows
    assert splice(carried(P1, gen), THROUGH, T, CLOSING) == P1 + gen + [IM_END] + TAIL


def test_several_tool_calls_in_one_turn() -> None:
    call_b = [
        1670,
        198,
        303,
        382,
        274,
        269,
        384,
        62,
        381,
        302,
        269,
        385,
        274,
        304,
        325,
        274,
        269,
        739,
        387,
        198,
        1671,
    ]
    resp_b = [1672, 198, 303, 83, 334, 79, 274, 220, 18, 92, 198, 1673]
    resp_a = TAIL[4:17]
    # Qwen's template: calls joined by \n; consecutive tool results grouped in one user turn.
    through = [*P1, *RENDERED_CALL, NL, *call_b, IM_END, NL]
    rendered = [*through, IM_START, USER, NL, *resp_a, NL, *resp_b, IM_END, NL, IM_START, ASSISTANT, NL]
    gen = [*GENERATED_CALL, NL, *call_b, IM_END]
    out = splice(carried(P1, gen), through, rendered, CLOSING)
    assert out == P1 + gen + [
        198, 1666, 486, 198, 1672, 198, 303, 83, 334, 79, 274, 220, 17, 16, 92, 198, 1673, 198, 1672,
        198, 303, 83, 334, 79, 274, 220, 18, 92, 198, 1673, 1667, 198, 1666, 750, 198,
    ]  # fmt: skip


def test_a_template_that_drops_earlier_reasoning_once_a_user_turn_follows() -> None:
    gen1 = [THINK, 500, 501, END_THINK, NL, NL, *GENERATED_CALL, IM_END]
    through1 = [*P1, THINK, 500, 501, END_THINK, NL, NL, *RENDERED_CALL, IM_END, NL]
    p2 = splice(carried(P1, gen1), through1, [*through1, *TAIL[1:]], CLOSING)
    assert p2 == P1 + gen1 + TAIL  # the tool-result turn keeps the think block
    gen2 = [THINK, 600, END_THINK, NL, NL, 700, 701, IM_END]
    # Up to the answer (the last message, after the latest user query) the template renders both
    # turns' reasoning; once the user asks again it drops every earlier turn's reasoning, so the
    # whole rendering differs from the first within the opening assistant turn. The same turns
    # are closed: the answer's closing is the same occurrence of <|im_end|>\n in both.
    through2 = [
        *through1,
        *TAIL[1:-3],
        IM_START,
        ASSISTANT,
        NL,
        THINK,
        600,
        END_THINK,
        NL,
        NL,
        700,
        701,
        IM_END,
        NL,
    ]
    whole = [
        *P1, *RENDERED_CALL, IM_END, *TAIL[:-3], IM_START, ASSISTANT, NL, 700, 701, IM_END, NL,
        IM_START, USER, NL, 800, 801, IM_END, NL, IM_START, ASSISTANT, NL,
    ]  # fmt: skip
    assert whole[: len(through2)] != through2
    assert new_messages_start(through2, whole, CLOSING) == len(whole) - 10
    out = splice(CarriedTokens(p2, gen2, None, 4), through2, whole, CLOSING)
    assert out == p2 + [1668, 600, 1669, 198, 198, 700, 701, 1667] + [
        198, 1666, 486, 198, 800, 801, 1667, 198, 1666, 750, 198,
    ]  # fmt: skip


def test_several_earlier_turns_the_latest_wins_and_must_extend_the_earlier() -> None:
    gen1 = [*GENERATED_CALL, IM_END]
    p2 = P1 + gen1 + TAIL
    gen2 = [700, IM_END]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "prompt_token_ids": P1, "generation_token_ids": gen1},
        {"role": "tool", "content": "{}"},
        {"role": "assistant", "content": "x", "prompt_token_ids": p2, "generation_token_ids": gen2},
        {"role": "user", "content": "more"},
    ]
    found = carried_tokens(messages)
    assert found is not None and found.prompt_token_ids is p2 and found.generation_token_ids is gen2
    assert found.history_divergence is None and found.index == 3
    messages[3]["prompt_token_ids"] = T  # re-rendered history instead of the carried ids
    found = carried_tokens(messages)
    assert found is not None and found.history_divergence == {"index": 339, "expected": 84, "actual": 325}
    report = drift_report(found, T + [700, IM_END, 9], SpliceOutcome.SPLICED)
    assert report.as_dict() == {
        "extends_carried_tokens": True,
        "divergence": None,
        "spliced": True,
        "outcome": "spliced",
        "history_divergence": {"index": 339, "expected": 84, "actual": 325},
    }


def test_no_carried_tokens() -> None:
    assert carried_tokens([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]) is None
    bad = {"role": "assistant", "prompt_token_ids": [1, "2"], "generation_token_ids": [3]}
    assert carried_tokens([bad]) is None


def test_refusals_say_why() -> None:
    gen = [*GENERATED_CALL, IM_END]
    with pytest.raises(SpliceError, match="does not end the carried turn with its closing tokens"):
        splice(carried(P1, gen), THROUGH[:-1], T, CLOSING)
    with pytest.raises(SpliceError, match="closes fewer turns"):
        splice(carried(P1, gen), [*T[:200], *THROUGH[200:]], THROUGH[:-2], CLOSING)
    with pytest.raises(SpliceError, match="closing tokens are unknown"):
        splice(carried(P1, gen), THROUGH, T, [])
    other_tools = list(P1)
    other_tools[40] += 1  # a different tool list in the system prompt
    why = opening_mismatch(carried(P1, gen), other_tools)
    assert why is not None and "first difference {'index': 40" in why and "tools" in why
    assert opening_mismatch(carried(P1 + gen + TAIL, [5]), P1) is None


def test_divergence_past_the_end() -> None:
    assert divergence([1, 2, 3], [1, 2]) == {"index": 2, "expected": 3, "actual": None}
    assert divergence([1, 2], [1, 2, 3]) is None
