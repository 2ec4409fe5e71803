"""The tool-call splice on real vLLM's own ids (fixtures/real_vllm_tool_splice.json, the tiny
ChatML model of ../shared/real_vllm): a forced tool call cut off by max_tokens, and the same call
finished.

Guided decoding spells `<tool_call>` as the characters `<`, `tool`, `_`, ... (27, 920, 62, ...)
while the template renders it as one special id (1670), so the re-rendered history drifts at the
first generated token; the splice keeps the generated ids and takes only what follows the turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.conversion.prefix import (
    CarriedTokens,
    SpliceError,
    closing_tokens,
    divergence,
    opening_mismatch,
    splice,
)

CAPTURE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "real_vllm_tool_splice.json").read_text()
)
IM_END = 1667
GENERATED = [27, 920, 62, 66, 310, 29, 198, 303, 77, 64, 76, 68, 274, 269, 384, 62, 86, 68, 321, 1]
GENERATED += [11, 220, 1, 385, 1, 25, 220, 303, 292, 72, 83, 274, 1, 658, 1, 92, 92, 198, 27, 14]
# The turn after the cut-off text: <|im_end|> \n, the user turn "Again?", the generation prompt.
AFTER_CUT = [IM_END, 198, 1666, 486, 198, 32, 70, 411, 30, IM_END, 198, 1666, 750, 198]
# After the finished call's own <|im_end|>: \n, the tool result wrapped as a user turn
# (<tool_response> 1672 ... </tool_response> 1673), the generation prompt.
AFTER_CALL = [198, 1666, 486, 198, 1672, 198, 303, 83, 334, 79, 274, 220, 17, 16, 92, 198, 1673]
AFTER_CALL += [IM_END, 198, 1666, 750, 198]


def case(name: str) -> tuple[CarriedTokens, list[int], list[int]]:
    """(the carried turn, /tokenize of the next turn's conversation up to that turn, and whole)."""
    turn = CAPTURE[name]["turn"]
    carried = CarriedTokens(turn["prompt_token_ids"], turn["token_ids"], None, 1)
    return carried, CAPTURE[name]["through_tokenize"]["tokens"], CAPTURE[name]["next_tokenize"]["tokens"]


def template_closing() -> list[int]:
    probe = CAPTURE["probe"]
    return closing_tokens(probe["closed"]["tokens"], probe["open"]["tokens"])


def test_capture_is_what_the_tests_say() -> None:
    cut, _, _ = case("cut_off")
    done, _, _ = case("tool_call")
    assert CAPTURE["cut_off"]["turn"]["finish_reason"] == "length"
    assert CAPTURE["tool_call"]["turn"]["finish_reason"] == "tool_calls"
    assert cut.generation_token_ids == GENERATED
    assert done.generation_token_ids == [*GENERATED, 920, 62, 66, 64, 273, 29, IM_END]
    assert cut.prompt_token_ids == done.prompt_token_ids and cut.prompt_token_ids[-3:] == [1666, 750, 198]
    for name in ("cut_off", "tool_call"):  # the first turn's prompt is the conversation's opening
        assert CAPTURE[name]["opening_tokenize"]["tokens"] == cut.prompt_token_ids


def test_the_templates_closing_tokens_from_the_probe() -> None:
    assert template_closing() == [IM_END, 198]
    with pytest.raises(SpliceError, match="closing tokens are unknown"):
        closing_tokens(CAPTURE["probe"]["open"]["tokens"], CAPTURE["probe"]["open"]["tokens"])
    with pytest.raises(SpliceError, match="closing tokens are unknown"):
        closing_tokens([1, 2, 3], [1, 9])


def test_cut_off_tool_call() -> None:
    """The splice the old end-of-turn counting refused: the cut-off call ends on "/" (14), which
    also occurs in the tool system prompt. Only the template's own renderings are used now."""
    carried, through, rendered = case("cut_off")
    out = splice(carried, through, rendered, template_closing())
    assert out == [*carried.prompt_token_ids, *GENERATED, *AFTER_CUT]
    assert divergence(carried.prompt_token_ids + GENERATED, out) is None
    # the plain rendering drifted at the first generated token
    assert divergence(carried.prompt_token_ids + GENERATED, rendered) == {
        "index": len(carried.prompt_token_ids),
        "expected": 27,
        "actual": 1670,
    }


def test_finished_tool_call_then_tool_result() -> None:
    carried, through, rendered = case("tool_call")
    expected = [*carried.prompt_token_ids, *carried.generation_token_ids, *AFTER_CALL]
    assert splice(carried, through, rendered, template_closing()) == expected
    # the generation's own <|im_end|> stands for the first closing token, known as a stop id or not
    assert splice(carried, through, rendered, template_closing(), {IM_END}) == expected


def test_inconsistent_renderings_are_refused_with_the_reason() -> None:
    carried, through, rendered = case("cut_off")
    closing = template_closing()
    other_tools = list(CAPTURE["cut_off"]["opening_tokenize"]["tokens"])
    other_tools[40] += 1  # a different tool list in the system prompt
    why = opening_mismatch(carried, other_tools)
    assert why is not None and "'index': 40," in why
    with pytest.raises(SpliceError, match="does not end the carried turn with its closing tokens"):
        splice(carried, through[:-1], rendered, closing)  # a rendering that leaves the turn open
    with pytest.raises(SpliceError, match="closes fewer turns"):
        splice(carried, [*through[:-3], 5, *through[-2:]], carried.prompt_token_ids, closing)
