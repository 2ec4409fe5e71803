"""One rollout's `/run` result → the token sequence an RL trainer trains on.

This is what NeMo RL, veRL and TRL do with each result: walk `response.output`, and for every
item that carries `generation_token_ids`, require that its `prompt_token_ids` start with all the
tokens seen so far (earlier prompts and generations). The new prompt tokens (tool results, the
next turn's template) are context, masked out of the loss; the generation tokens are trained on,
with the log-probs the engine reported. A rollout whose prompts do not extend each other cannot be
trained on as one sequence: that is the contiguity guarantee the adapter's splicing provides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nemo_gym.exceptions import NemoGymError


class NonContiguousRollout(NemoGymError, ValueError):
    """A turn's prompt does not start with the tokens of the turns before it."""

    def __init__(self, turn: int, seen: int, diverged_at: int) -> None:
        super().__init__(
            f"Non-contiguous messages found! turn {turn}: its prompt_token_ids do not start with the "
            f"{seen} tokens seen so far (first difference at index {diverged_at})"
        )
        self.turn, self.seen, self.diverged_at = turn, seen, diverged_at


@dataclass
class TrainingSequence:
    """A rollout as one sequence: the first prompt, then everything after it with a loss mask."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)  # 1: generated (trained), 0: context
    logprobs: list[float] = field(default_factory=list)  # 0.0 where the mask is 0
    reward: float = 0.0
    turns: int = 0

    @property
    def generated_tokens(self) -> int:
        return sum(self.completion_mask)


def _first_difference(seen: list[int], prompt: list[int]) -> int:
    for i, (a, b) in enumerate(zip(seen, prompt, strict=False)):
        if a != b:
            return i
    return min(len(seen), len(prompt))


def training_sequence(result: Mapping[str, Any]) -> TrainingSequence:
    """The trainable sequence of one `/run` result; NonContiguousRollout when turns do not extend.

    Raises ValueError for a result with no generated turn (nothing to train on).
    """
    output = ((result.get("response") or {}).get("output")) or []
    sequence: TrainingSequence | None = None
    seen: list[int] = []
    for item in output:
        generated = item.get("generation_token_ids") if isinstance(item, Mapping) else None
        if not generated:
            continue
        prompt = [int(t) for t in item["prompt_token_ids"]]
        generated = [int(t) for t in generated]
        logprobs = [float(x) for x in item.get("generation_log_probs") or []]
        if len(logprobs) != len(generated):
            raise ValueError(f"{len(logprobs)} log-probs for {len(generated)} generated tokens")
        if sequence is None:
            sequence = TrainingSequence(prompt_ids=prompt)
        else:
            if prompt[: len(seen)] != seen:
                raise NonContiguousRollout(sequence.turns, len(seen), _first_difference(seen, prompt))
            context = prompt[len(seen) :]
            sequence.completion_ids += context
            sequence.completion_mask += [0] * len(context)
            sequence.logprobs += [0.0] * len(context)
        sequence.completion_ids += generated
        sequence.completion_mask += [1] * len(generated)
        sequence.logprobs += logprobs
        sequence.turns += 1
        seen = prompt + generated
    if sequence is None:
        raise ValueError("the rollout has no turn with generation_token_ids (is the adapter in token mode?)")
    reward = result.get("reward")
    sequence.reward = float(reward) if isinstance(reward, int | float) else 0.0
    return sequence
