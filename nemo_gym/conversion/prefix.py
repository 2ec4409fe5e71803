"""Prefix splicing and drift measurement for multi-turn token-mode rollouts (pure, no I/O).

RL trainers need turn N's prompt to start with exactly turn N-1's prompt + generated tokens.
Re-rendering the history through the chat template re-tokenizes it, and that differs from
what the model generated (a JSON key guided decoding wrote as one-letter tokens, a tool call
the template marks with a token the model never wrote, reasoning the template drops from
earlier turns, a generation prompt the template does not repeat for the same turn in history).

So the carried ids are the truth for everything up to the carried turn, and only what came
after it is rendered. The template is asked for two renderings of the request's own messages:
up to and including the carried assistant message (finished, no generation prompt), and the
whole conversation (with it). The first ends with the template's closing tokens for that turn;
where that closing falls in the second is where the new messages start, found as the same
occurrence of the closing tokens (re-rendering earlier turns changes their contents, never how
many turns were closed). The prompt is then the carried ids, the closing tokens the generation
did not write itself, and the whole rendering from that point on. Nothing else is read from
how the template renders old turns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

import orjson

from nemo_gym.exceptions import NemoGymError
from nemo_gym.protocol.tokens import TOKEN_FIELDS


class SpliceOutcome(StrEnum):
    """What happened to a token-mode request that carried an earlier turn's ids."""

    SPLICED = "spliced"  # the prompt was the carried ids + the rendering of what followed them
    CONVERSATION_CHANGED = "conversation_changed"  # refused: another system prompt, tool list or opening
    TEMPLATE_UNALIGNED = "template_unaligned"  # refused: the template's closing tokens were not found
    UPSTREAM_IGNORES = "upstream_ignores"  # the upstream rendered the messages instead of using the ids
    OFF = "off"  # prefix_token_ids: off


class SpliceError(NemoGymError, ValueError):
    """The carried tokens cannot be spliced into this request; `outcome` says which refusal."""

    def __init__(self, message: str, outcome: SpliceOutcome = SpliceOutcome.TEMPLATE_UNALIGNED) -> None:
        super().__init__(message)
        self.outcome = outcome


class Divergence(TypedDict):
    """Where two id lists first differ; `actual` is None past the end of the actual list."""

    index: int
    expected: int
    actual: int | None


class DriftDict(TypedDict):
    """`DriftReport` as the response's `token_drift` object."""

    extends_carried_tokens: bool
    divergence: Divergence | None
    spliced: bool
    outcome: str
    history_divergence: NotRequired[Divergence]
    note: NotRequired[str]


@dataclass(frozen=True, slots=True)
class CarriedTokens:
    """The ids an earlier turn's response carried back on its assistant message."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    history_divergence: Divergence | None  # the latest carried turn vs the one before it
    index: int = -1  # the carrying assistant message's position in `messages`


@dataclass(frozen=True, slots=True)
class DriftReport:
    """What a token-mode response says about its prompt vs the tokens carried back."""

    extends_carried_tokens: bool
    divergence: Divergence | None
    outcome: SpliceOutcome
    note: str | None = None
    history_divergence: Divergence | None = None

    @property
    def spliced(self) -> bool:
        return self.outcome is SpliceOutcome.SPLICED

    def as_dict(self) -> DriftDict:
        out: DriftDict = {
            "extends_carried_tokens": self.extends_carried_tokens,
            "divergence": self.divergence,
            "spliced": self.spliced,
            "outcome": self.outcome.value,
        }
        if self.history_divergence is not None:
            out["history_divergence"] = self.history_divergence
        if self.note:
            out["note"] = self.note
        return out


def _int_list(value: Any) -> bool:
    """A list of ints (as JSON gives them). `sum` runs in C and is the cheapest full check: a
    string, null, list or object element raises, a float makes the total a float; at a 32k-token
    prompt it costs a quarter of an `isinstance` pass."""
    if not isinstance(value, list):
        return False
    try:
        return type(sum(value)) is int
    except TypeError:
        return False


def carried_tokens(messages: list[dict[str, Any]]) -> CarriedTokens | None:
    """The latest assistant message carrying `prompt_token_ids` + `generation_token_ids`.

    The latest wins; it must itself extend the one carried before it (its prompt starts with
    that turn's prompt + generation), and where it does not, the divergence is reported so
    a trainer sees that the rollout is not one token sequence."""
    latest: tuple[int, list[int], list[int]] | None = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") != "assistant":
            continue
        prompt = message.get("prompt_token_ids")
        gen = message.get("generation_token_ids")
        if latest is None:
            if _int_list(prompt) and _int_list(gen):  # the ids that go upstream: checked one by one
                latest = (index, prompt, gen)
        elif isinstance(prompt, list) and isinstance(gen, list):  # only compared with the latest
            history = _extension_divergence(prompt, gen, latest[1])
            return CarriedTokens(latest[1], latest[2], history, latest[0])
    if latest is None:
        return None
    return CarriedTokens(latest[1], latest[2], None, latest[0])


def _extension_divergence(prompt: list[Any], gen: list[Any], actual: list[int]) -> Divergence | None:
    """`divergence(prompt + gen, actual)` without building the concatenation (the common case,
    that `actual` extends both, costs two C-level slice comparisons)."""
    n, m = len(prompt), len(gen)
    if actual[:n] == prompt and actual[n : n + m] == gen and len(actual) >= n + m:
        return None
    return divergence(prompt + gen, actual)


def without_token_fields(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template sees them: the carried id lists stay with the adapter (vLLM
    ignores them, and sending every turn's lists again would grow each request quadratically)."""
    out = []
    for message in messages:
        if "generation_token_ids" in message or "prompt_token_ids" in message:
            message = {k: v for k, v in message.items() if k not in TOKEN_FIELDS}
        out.append(message)
    return out


def divergence(expected: list[int], actual: list[int]) -> Divergence | None:
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
    carried: CarriedTokens, prompt_ids: list[int], outcome: SpliceOutcome, note: str | None = None
) -> DriftReport:
    """A verified splice extends the carried ids by construction; anything else is measured."""
    if outcome is SpliceOutcome.SPLICED:
        return DriftReport(True, None, outcome, note, carried.history_divergence)
    diverged = _extension_divergence(carried.prompt_token_ids, carried.generation_token_ids, prompt_ids)
    return DriftReport(diverged is None, diverged, outcome, note, carried.history_divergence)


def closing_tokens(closed: list[int], unclosed: list[int]) -> list[int]:
    """The ids the chat template puts after an assistant message's content, from two
    renderings of one short conversation that ends with that message: as a finished turn
    (`add_generation_prompt` false) and left open (vLLM's `continue_final_message`).

    Their first id is the template's end-of-turn token. The carried ids cannot say it
    reliably: the last id of a generation is the end-of-turn token only if it stopped on its
    own, and a cut-off generation (finish_reason length) ends anywhere."""
    n = len(unclosed)
    if not n or len(closed) <= n or closed[:n] != unclosed:
        raise SpliceError(
            "the template's closing tokens are unknown: the finished rendering of a probe "
            "conversation does not extend its open rendering"
        )
    return closed[n:]


def closing_from_rendering(through_carried: list[int], end_of_turn: Iterable[int]) -> list[int] | None:
    """Without a probe: the tail of the carried turn's own rendering from its last end-of-turn
    id (a configured or learned one), or None when none occurs."""
    eot = set(end_of_turn)
    for i in range(len(through_carried) - 1, -1, -1):
        if through_carried[i] in eot:
            return through_carried[i:]
    return None


def _ends(ids: list[int], seq: list[int], k: int) -> int:
    """The index just after the k-th non-overlapping occurrence of `seq` in `ids`, or -1."""
    first, rest, n = seq[0], seq[1:], len(seq)
    pos = 0
    found = 0
    while True:
        try:
            i = ids.index(first, pos)  # C-level search between closings
        except ValueError:
            return -1
        if ids[i + 1 : i + n] == rest:
            found += 1
            if found == k:
                return i + n
            pos = i + n
        else:
            pos = i + 1


def _count(ids: list[int], seq: list[int]) -> int:
    first, rest, n = seq[0], seq[1:], len(seq)
    if not rest:
        return ids.count(first)
    count = pos = 0
    while True:
        try:
            i = ids.index(first, pos)
        except ValueError:
            return count
        if ids[i + 1 : i + n] == rest:
            count += 1
            pos = i + n
        else:
            pos = i + 1


def new_messages_start(through_carried: list[int], whole: list[int], closing: list[int]) -> int:
    """Where the rendering of the messages after the carried turn begins in `whole`.

    `through_carried` ends with the template's closing of the carried turn. When it is a
    prefix of `whole` (the template renders that turn the same with or without what follows)
    the answer is its length. Otherwise the template rendered some earlier turn differently once
    more messages followed (Qwen3 drops reasoning and the empty think block of turns before the
    latest user message): the carried turn's closing is then the same occurrence of the closing
    tokens in `whole` as the last one in `through_carried`."""
    if not closing:
        raise SpliceError("the template's closing tokens are unknown")
    n = len(through_carried)
    if through_carried[n - len(closing) :] != closing:
        raise SpliceError(
            f"the template does not end the carried turn with its closing tokens {closing} "
            f"(it ends with {through_carried[-len(closing) - 2 :]}); set end_of_turn_token_ids if they are wrong"
        )
    if whole[:n] == through_carried:
        return n
    k = _count(through_carried, closing)
    end = _ends(whole, closing, k)
    if end < 0:
        raise SpliceError(
            f"the conversation's rendering closes fewer turns ({_count(whole, closing)}) than the "
            f"rendering up to the carried turn ({k}), with closing tokens {closing}"
        )
    return end


def tokens_array(raw: bytes) -> bytes | None:
    """The `[...]` bytes of the `tokens` list in a /tokenize answer as vLLM writes it (compact
    JSON), or None when it is not written that way (the caller then parses the answer)."""
    start = raw.find(b'"tokens":[')
    if start < 0:
        return None
    start += len(b'"tokens":')
    end = raw.find(b"]", start)
    return raw[start : end + 1] if end > 0 else None


def tail_after(through: bytes, whole: bytes, closing: list[int]) -> list[int] | None:
    """`new_messages_start`'s common case read off the bytes of the two `tokens` arrays: when the
    ids of `through` are a prefix of those of `whole` and end with the closing tokens, the ids of
    `whole` after them, with only those parsed (at a 32k-token context that saves parsing two
    lists of 32k ids). None in any other case: the caller parses both and takes the full path."""
    body = through[:-1]
    if len(through) <= 2 or not closing or not whole.startswith(body):
        return None
    rest = whole[len(body) :]
    if rest[:1] == b"]":
        tail = b"[]"
    elif rest[:1] == b",":
        tail = b"[" + rest[1:]
    else:  # "...,12]" against "...,123,...": not the same last id
        return None
    last = through[1:-1].rsplit(b",", len(closing))[-len(closing) :]
    try:
        if list(map(int, last)) != closing:
            return None
        return orjson.loads(tail)
    except ValueError:
        return None


def opening_mismatch(carried: CarriedTokens, opening: list[int]) -> str | None:
    """The carried prompt must start with the conversation's opening (the messages before the
    first assistant turn, with the generation prompt) as the template renders it now: that is
    the prompt of the rollout's first turn, which every spliced turn keeps. Otherwise the
    system prompt, the tool list or the first messages changed, and vLLM would render
    something the carried ids do not hold."""
    prompt = carried.prompt_token_ids
    if prompt[: len(opening)] == opening:
        return None
    where = divergence(opening, prompt)
    return (
        "the carried prompt does not start with this conversation's opening as the template renders "
        f"it now (first difference {where}): the system prompt, the tools or the first messages changed"
    )


def splice(
    carried: CarriedTokens,
    through_carried: list[int],
    whole: list[int],
    closing: list[int],
    stop_ids: frozenset[int] | set[int] = frozenset(),
) -> list[int]:
    """The carried prompt + generation, then the template's closing tokens the generation did
    not write itself, then the rendering of everything after the carried turn.

    A generation that stopped on its own ends with a stop token (the template's end-of-turn
    id, or another of the model's stop ids in `stop_ids`): that token stands for the first
    closing token and the rest follows (`<|im_end|>` then the template's newline). A cut-off
    one (finish_reason length) ends anywhere, and the whole closing follows it."""
    start = new_messages_start(through_carried, whole, closing)
    return join(carried, closing, whole[start:], stop_ids)


def join(
    carried: CarriedTokens,
    closing: list[int],
    tail: list[int],
    stop_ids: frozenset[int] | set[int] = frozenset(),
) -> list[int]:
    """The carried ids, the closing tokens the generation did not write (see `splice`), `tail`."""
    gen = carried.generation_token_ids
    ended = bool(gen) and (gen[-1] == closing[0] or gen[-1] in stop_ids)
    bridge = closing[1:] if ended else closing
    return [*carried.prompt_token_ids, *gen, *bridge, *tail]
