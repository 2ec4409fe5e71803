"""The tool-call splice on real vLLM's own ids (fixtures/real_vllm_tool_splice.json): a forced tool
call cut off by max_tokens, which the splice used to refuse, and the same call finished.

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
    end_of_turn_candidates,
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


def case(name: str) -> tuple[CarriedTokens, list[int]]:
    turn = CAPTURE[name]["turn"]
    carried = CarriedTokens(turn["prompt_token_ids"], turn["token_ids"], None)
    return carried, CAPTURE[name]["next_tokenize"]["tokens"]


def template_closing() -> list[int]:
    probe = CAPTURE["probe"]
    return closing_tokens(probe["closed"]["tokens"], probe["open"]["tokens"])


def test_capture_is_what_the_tests_say() -> None:
    cut, _ = case("cut_off")
    done, _ = case("tool_call")
    assert CAPTURE["cut_off"]["turn"]["finish_reason"] == "length"
    assert CAPTURE["tool_call"]["turn"]["finish_reason"] == "tool_calls"
    assert cut.generation_token_ids == GENERATED
    assert done.generation_token_ids == [*GENERATED, 920, 62, 66, 64, 273, 29, IM_END]
    assert cut.prompt_token_ids == done.prompt_token_ids and cut.prompt_token_ids[-3:] == [1666, 750, 198]


def test_the_templates_closing_tokens_from_the_probe() -> None:
    assert template_closing() == [IM_END, 198]
    with pytest.raises(SpliceError, match="closing tokens are unknown"):
        closing_tokens(CAPTURE["probe"]["open"]["tokens"], CAPTURE["probe"]["open"]["tokens"])
    with pytest.raises(SpliceError, match="closing tokens are unknown"):
        closing_tokens([1, 2, 3], [1, 9])


def test_cut_off_tool_call_the_refused_case() -> None:
    carried, rendered = case("cut_off")
    # The old guess: a cut-off generation's last id ("/", 14) as the end-of-turn token. It
    # occurs in the tool system prompt (</tools>) and in the re-rendered text, so counting it
    # lands inside the system prompt; the generation prompts after it differ: refused.
    guess = end_of_turn_candidates(carried, set())
    assert guess == {14}
    with pytest.raises(SpliceError, match=r"different generation prompts.*end-of-turn ids \[14\]"):
        splice(carried, rendered, guess)
    closing = template_closing()
    out = splice(carried, rendered, frozenset(closing[:1]), closing)
    assert out == [*carried.prompt_token_ids, *GENERATED, *AFTER_CUT]
    assert divergence(carried.prompt_token_ids + GENERATED, out) is None
    # the plain rendering drifted at the first generated token
    assert divergence(carried.prompt_token_ids + GENERATED, rendered) == {
        "index": len(carried.prompt_token_ids),
        "expected": 27,
        "actual": 1670,
    }


def test_finished_tool_call_then_tool_result() -> None:
    carried, rendered = case("tool_call")
    closing = template_closing()
    expected = [*carried.prompt_token_ids, *carried.generation_token_ids, *AFTER_CALL]
    assert splice(carried, rendered, frozenset(closing[:1]), closing) == expected
    # a finished generation's last id is the end-of-turn token: the guess holds here
    assert splice(carried, rendered, end_of_turn_candidates(carried, set())) == expected


def test_inconsistent_renderings_are_refused_with_the_reason() -> None:
    carried, rendered = case("cut_off")
    closing = template_closing()
    eot = frozenset(closing[:1])
    other_tools = list(rendered)
    other_tools[40] += 1  # a different tool list in the system prompt
    with pytest.raises(SpliceError, match="first turn differs"):
        splice(carried, other_tools, eot, closing)
    other_prompt = [*rendered[:-2], 999, 198]  # another generation prompt (template or kwargs changed)
    with pytest.raises(SpliceError, match="different generation prompts"):
        splice(carried, other_prompt, eot, closing)
    unclosed = [t for i, t in enumerate(rendered) if i != len(carried.prompt_token_ids) + 22 + 1]
    with pytest.raises(SpliceError, match="not the template's closing tokens"):
        splice(carried, unclosed, eot, closing)  # the cut-off turn closed by <|im_end|> alone
    with pytest.raises(SpliceError, match="fewer than"):
        splice(carried, carried.prompt_token_ids, eot, closing)  # the rendering of an earlier turn
