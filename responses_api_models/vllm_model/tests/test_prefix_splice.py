"""Prefix splicing on a Qwen/Hermes chat template (tiny-qwen2 ids from a real vLLM /tokenize
capture, tests/fixtures/vllm_wire/tokenize_tool_history.json): the spliced prompt is exactly the
carried ids followed by the template's tail after the turn they closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_gym.conversion.prefix import (
    CarriedTokens,
    SpliceError,
    carried_tokens,
    divergence,
    drift_report,
    end_of_turn_candidates,
    splice,
)

WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
# [system + tools, user "Weather in Paris?", assistant tool call, tool result] + generation prompt
T = json.loads((WIRE / "tokenize_tool_history.json").read_text())["tokens"]
IM_START, IM_END, NL, ASSISTANT, USER = 1666, 1667, 198, 750, 486
THINK, END_THINK = 1668, 1669
EOT = frozenset({IM_END})

P1 = T[:325]  # the first turn's prompt: ends with the generation prompt
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
    return CarriedTokens(prompt, gen, None)


def test_capture_layout() -> None:
    assert P1[-3:] == [IM_START, ASSISTANT, NL]
    assert RENDERED_CALL[0] == 1670 and RENDERED_CALL[-1] == 1671 and T[346] == IM_END
    assert T[347:] == TAIL


def test_tool_call_turn_keeps_the_generated_tokens() -> None:
    gen = [*GENERATED_CALL, IM_END]
    out = splice(carried(P1, gen), T, EOT)
    assert out == P1 + [*GENERATED_CALL, 1667] + [
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
    assert out != T  # the plain rendering drifted; the splice did not
    assert divergence(P1 + gen, T) == {"index": 339, "expected": 84, "actual": 325}
    assert divergence(P1 + gen, out) is None


def test_generation_cut_off_without_end_of_turn_gets_the_templates_closing_token() -> None:
    gen = [1670, 198, 303, 382]  # finish_reason length, inside the tool call
    out = splice(carried(P1, gen), T, EOT)
    assert out == P1 + [1670, 198, 303, 382, 1667] + TAIL


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
    rendered = [
        *P1,
        *RENDERED_CALL,
        NL,
        *call_b,
        IM_END,
        NL,
        IM_START,
        USER,
        NL,
        *resp_a,
        NL,
        *resp_b,
        IM_END,
        NL,
        IM_START,
        ASSISTANT,
        NL,
    ]
    gen = [*GENERATED_CALL, NL, *call_b, IM_END]
    out = splice(carried(P1, gen), rendered, EOT)
    assert out == P1 + gen + [
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
        198,
        1672,
        198,
        303,
        83,
        334,
        79,
        274,
        220,
        18,
        92,
        198,
        1673,
        1667,
        198,
        1666,
        750,
        198,
    ]


def test_think_blocks_and_a_template_that_drops_earlier_reasoning_then_a_user_turn() -> None:
    gen1 = [THINK, 500, 501, END_THINK, NL, NL, *GENERATED_CALL, IM_END]
    p2 = splice(carried(P1, gen1), T, EOT)  # the tool-result turn keeps the think block
    assert p2 == P1 + gen1 + TAIL
    gen2 = [THINK, 600, END_THINK, NL, NL, 700, 701, IM_END]
    # The user asks again: a Qwen3-style template drops every earlier turn's reasoning and
    # re-renders the tool call, so the history differs from p2 - but the same turns are closed.
    rendered = [
        *P1,
        *RENDERED_CALL,
        IM_END,
        *TAIL[:-3],
        IM_START,
        ASSISTANT,
        NL,
        700,
        701,
        IM_END,
        NL,
        IM_START,
        USER,
        NL,
        800,
        801,
        IM_END,
        NL,
        IM_START,
        ASSISTANT,
        NL,
    ]
    assert rendered[: len(p2)] != p2
    out = splice(carried(p2, gen2), rendered, EOT)
    assert out == p2 + [1668, 600, 1669, 198, 198, 700, 701, 1667] + [
        198,
        1666,
        486,
        198,
        800,
        801,
        1667,
        198,
        1666,
        750,
        198,
    ]


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
    assert found.history_divergence is None
    messages[3]["prompt_token_ids"] = T  # re-rendered history instead of the carried ids
    found = carried_tokens(messages)
    assert found is not None and found.history_divergence == {"index": 339, "expected": 84, "actual": 325}
    report = drift_report(found, T + [700, IM_END, 9], spliced=True, note=None)
    assert report["extends_carried_tokens"] and report["history_divergence"]["index"] == 339


def test_no_carried_tokens() -> None:
    assert carried_tokens([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]) is None
    bad = {"role": "assistant", "prompt_token_ids": [1, "2"], "generation_token_ids": [3]}
    assert carried_tokens([bad]) is None


def test_end_of_turn_guess_from_a_finished_generation_is_verified() -> None:
    gen = [*GENERATED_CALL, IM_END]
    eot = end_of_turn_candidates(carried(P1, gen), set())
    assert eot == {IM_END} and splice(carried(P1, gen), T, eot) == P1 + gen + TAIL
    cut = [1670, 198, 303, 382]  # no known end-of-turn id and a cut-off generation: refuse
    with pytest.raises(SpliceError):
        splice(carried(P1, cut), T, end_of_turn_candidates(carried(P1, cut), set()))


def test_rendering_with_fewer_turns_is_refused() -> None:
    with pytest.raises(SpliceError, match="fewer than"):
        splice(carried(P1 + [IM_END] * 3, [5, IM_END]), T, EOT)
    with pytest.raises(SpliceError, match="unknown"):
        splice(carried(P1, [5]), T, frozenset())


def test_divergence_past_the_end() -> None:
    assert divergence([1, 2, 3], [1, 2]) == {"index": 2, "expected": 3, "actual": None}
    assert divergence([1, 2], [1, 2, 3]) is None


def test_several_end_of_turn_ids() -> None:
    gen = [*GENERATED_CALL, IM_END]
    assert splice(carried(P1, gen), T, frozenset({IM_END, 151643})) == P1 + gen + TAIL
    assert splice(carried(P1, [1670]), T, frozenset({IM_END, 151643})) == P1 + [1670, IM_END] + TAIL
