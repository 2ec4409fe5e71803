"""Prefix splicing and drift measurement for multi-turn token-mode rollouts (pure, no I/O).

RL trainers need turn N's prompt to start with exactly turn N-1's prompt + generated tokens.
Re-rendering the history through the chat template re-tokenizes it, and that can differ from
what the model actually generated (a JSON key guided decoding wrote as four one-letter tokens,
arguments re-serialized with a space, reasoning dropped from earlier turns). So the adapter
builds the prompt itself: the carried ids, then the template's tokens for everything after
that turn, found in the `/tokenize` rendering of the whole conversation by counting
end-of-turn tokens (dropping or re-rendering reasoning/tool calls never changes how many
turns were closed before, so the count aligns even where the token contents differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nemo_gym.exceptions import NemoGymError


@dataclass(frozen=True, slots=True)
class CarriedTokens:
    """The ids an earlier turn's response carried back on its assistant message."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    history_divergence: dict[str, Any] | None  # the latest carried turn vs the one before it

    @property
    def expected_prefix_len(self) -> int:
        return len(self.prompt_token_ids) + len(self.generation_token_ids)


_IS_INT = int.__instancecheck__


def _int_list(value: Any) -> bool:
    # map + all run in C: a 30k-token prompt costs microseconds, not a Python step per id.
    return isinstance(value, list) and all(map(_IS_INT, value))


def _count(ids: list[int], eot_ids: frozenset[int] | set[int]) -> int:
    if len(eot_ids) == 1:
        return ids.count(next(iter(eot_ids)))  # C-level
    return sum(1 for t in ids if t in eot_ids)


def _kth(ids: list[int], eot_ids: frozenset[int] | set[int], k: int) -> tuple[int, int]:
    """(index of the k-th end-of-turn id or -1, how many were seen)."""
    if len(eot_ids) == 1:
        eot = next(iter(eot_ids))
        pos = -1
        for seen in range(k):
            try:
                pos = ids.index(eot, pos + 1)  # C-level search between turns
            except ValueError:
                return -1, seen
        return pos, k
    seen = 0
    for i, t in enumerate(ids):
        if t in eot_ids:
            seen += 1
            if seen == k:
                return i, seen
    return -1, seen


def carried_tokens(messages: list[dict[str, Any]]) -> CarriedTokens | None:
    """The latest assistant message carrying `prompt_token_ids` + `generation_token_ids`.

    The latest wins; it must itself extend the one carried before it (its prompt starts with
    that turn's prompt + generation), and where it does not, the divergence is reported so
    a trainer sees that the rollout is not one token sequence."""
    found: list[tuple[list[int], list[int]]] = []
    for message in reversed(messages):
        if message.get("role") != "assistant":
            continue
        prompt = message.get("prompt_token_ids")
        gen = message.get("generation_token_ids")
        if _int_list(prompt) and _int_list(gen):
            found.append((prompt, gen))
            if len(found) == 2:
                break
    if not found:
        return None
    prompt, gen = found[0]
    history = None
    if len(found) == 2:
        before_prompt, before_gen = found[1]
        history = divergence(before_prompt + before_gen, prompt)
    return CarriedTokens(prompt, gen, history)


def divergence(expected: list[int], actual: list[int]) -> dict[str, Any] | None:
    """None when `actual` starts with `expected`; else where they first differ (an index past
    the end of `actual` has `actual: null`)."""
    n = len(expected)
    if actual[:n] == expected:
        return None
    for i in range(min(n, len(actual))):
        if expected[i] != actual[i]:
            return {"index": i, "expected": expected[i], "actual": actual[i]}
    return {"index": len(actual), "expected": expected[len(actual)], "actual": None}


def drift_report(
    carried: CarriedTokens, prompt_ids: list[int], *, spliced: bool, note: str | None
) -> dict[str, Any]:
    """What each token-mode response says about its prompt vs the tokens carried back."""
    diverged = divergence(carried.prompt_token_ids + carried.generation_token_ids, prompt_ids)
    report: dict[str, Any] = {
        "extends_carried_tokens": diverged is None,
        "divergence": diverged,
        "spliced": spliced,
    }
    if carried.history_divergence is not None:
        report["history_divergence"] = carried.history_divergence
    if note:
        report["note"] = note
    return report


class SpliceError(NemoGymError, ValueError):
    """The conversation's rendering cannot be aligned with the carried tokens."""


def closing_tokens(closed: list[int], unclosed: list[int]) -> list[int]:
    """The ids the chat template puts after an assistant message's content, from two
    renderings of one short conversation that ends with that message: as a finished turn
    (`add_generation_prompt` false) and left open (vLLM's `continue_final_message`).

    Their first id is the template's end-of-turn token. That is the one thing the carried ids
    cannot say reliably: the last id of a generation is the end-of-turn token only if it
    stopped on its own, and a cut-off generation (finish_reason length) ends anywhere."""
    n = len(unclosed)
    if not n or len(closed) <= n or closed[:n] != unclosed:
        raise SpliceError(
            "the template's closing tokens are unknown: the finished rendering of a probe "
            "conversation does not extend its open rendering"
        )
    return closed[n:]


def end_of_turn_candidates(carried: CarriedTokens, known: frozenset[int] | set[int]) -> frozenset[int]:
    """Known end-of-turn ids, else the carried generation's last id. The guess holds for a
    generation that stopped on its own; for a cut-off one it is an arbitrary token, which
    `splice` usually refuses but cannot always tell from a real end-of-turn token, so callers
    should learn the ids (`closing_tokens`) rather than rely on it."""
    if known:
        return frozenset(known)
    gen = carried.generation_token_ids
    return frozenset(gen[-1:])


def splice(
    carried: CarriedTokens,
    rendered: list[int],
    eot_ids: frozenset[int] | set[int],
    closing: list[int] | None = None,
) -> list[int]:
    """carried prompt + generation (+ the template's end-of-turn token if the generation did
    not end with one, e.g. finish_reason length) + the rendering after that turn.

    `rendered` is the `/tokenize` answer for the whole conversation (generation prompt added).
    The turn closed by the carried generation is the k-th end-of-turn token of `rendered`,
    k = end-of-turn tokens in the carried ids + 1 (if the generation lacks its own).
    `closing` (the template's ids after an assistant message, see `closing_tokens`), when
    known, must be what the rendering puts where a cut-off turn is closed: that id is added
    to the carried ones, so it has to be the template's and not a lookalike."""
    if not eot_ids:
        raise SpliceError("end-of-turn token unknown")
    prompt = carried.prompt_token_ids
    gen = carried.generation_token_ids
    ended = bool(gen) and gen[-1] in eot_ids
    k = _count(prompt, eot_ids) + _count(gen, eot_ids)
    if not ended:
        k += 1
    pos, seen = _kth(rendered, eot_ids, k)
    if pos < 0:
        raise SpliceError(
            f"the conversation's rendering closes {seen} turns, fewer than the {k} the carried tokens "
            f"imply (end-of-turn ids {sorted(eot_ids)}; if wrong, set end_of_turn_token_ids)"
        )
    first, _ = _kth(prompt, eot_ids, 1)
    if first >= 0 and rendered[: first + 1] != prompt[: first + 1]:
        # No template re-renders the opening turn differently later: this is another
        # conversation (another system prompt or tool list) than the one the ids came from.
        raise SpliceError(
            "the rendering's first turn differs from the carried prompt's (another system prompt or tools?)"
        )
    why = _generation_prompt_mismatch(prompt, rendered, eot_ids)
    if why:
        raise SpliceError(f"{why} (end-of-turn ids {sorted(eot_ids)}; if wrong, set end_of_turn_token_ids)")
    if not ended and closing and rendered[pos : pos + len(closing)] != closing:
        raise SpliceError(
            f"the rendering closes the carried turn with {rendered[pos : pos + len(closing)]}, "
            f"not the template's closing tokens {closing}"
        )
    extra = [] if ended else [rendered[pos]]
    return [*prompt, *gen, *extra, *rendered[pos + 1 :]]


def _short(ids: list[int] | None, keep: int = 8) -> str:
    if ids is None or len(ids) <= keep:
        return str(ids)
    return f"[{len(ids)} ids ending {ids[-keep:]}]"


def _generation_prompt_mismatch(
    prompt: list[int], rendered: list[int], eot_ids: frozenset[int] | set[int]
) -> str | None:
    """Both must end with the template's generation prompt: the same ids after their last
    end-of-turn token, and some (every template opens the assistant turn with a header). A
    wrong end-of-turn guess almost never passes; an empty tail would let one that happens to
    end both sequences, such as a newline, through."""

    def tail(ids: list[int]) -> list[int] | None:
        for i in range(len(ids) - 1, -1, -1):
            if ids[i] in eot_ids:
                return ids[i + 1 :]
        return None

    a = tail(prompt)
    if a is None:
        return "the carried prompt has no end-of-turn token"
    if not a:
        return "the carried prompt ends with an end-of-turn token, not a generation prompt after one"
    b = tail(rendered)
    if a != b:
        return (
            "the carried prompt and the rendering end in different generation prompts: "
            f"{_short(a)} vs {_short(b)}"
        )
    return None
