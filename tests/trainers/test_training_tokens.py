"""A rollout result → the trainer's sequence, and the example loop that builds on it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.rollouts.training_tokens import NonContiguousRollout, TrainingSequence, training_sequence


def turn(prompt: list[int], generated: list[int], logprobs: list[float] | None = None) -> dict:
    return {
        "type": "function_call",
        "prompt_token_ids": prompt,
        "generation_token_ids": generated,
        "generation_log_probs": logprobs if logprobs is not None else [-0.5] * len(generated),
    }


def result(*items: dict, reward: float = 1.0) -> dict:
    return {"reward": reward, "response": {"output": list(items)}}


def test_turns_become_one_sequence_with_context_masked_out() -> None:
    got = training_sequence(
        result(
            {"type": "reasoning"},
            turn([1, 2, 3], [4, 5], [-0.1, -0.2]),
            {"type": "function_call_output", "output": "x"},
            turn([1, 2, 3, 4, 5, 6, 7], [8], [-0.3]),
            reward=0.5,
        )
    )
    assert got == TrainingSequence(
        prompt_ids=[1, 2, 3],
        completion_ids=[4, 5, 6, 7, 8],
        completion_mask=[1, 1, 0, 0, 1],
        logprobs=[-0.1, -0.2, 0.0, 0.0, -0.3],
        reward=0.5,
        turns=2,
    )
    assert got.generated_tokens == 3


def test_a_prompt_that_does_not_extend_the_history_is_refused() -> None:
    with pytest.raises(
        NonContiguousRollout, match=r"turn 1: .* the 5 tokens seen so far \(first difference at index 3\)"
    ):
        training_sequence(result(turn([1, 2, 3], [4, 5]), turn([1, 2, 3, 9, 5, 6], [7])))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (result({"type": "message"}), "no turn with generation_token_ids"),
        (result(turn([1], [2, 3], [-0.1])), "1 log-probs for 2 generated tokens"),
    ],
)
def test_results_that_cannot_be_trained_on(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        training_sequence(bad)


@pytest.mark.e2e
def test_the_example_trainer_loop_runs_against_the_simulator() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "examples/trainer_loop.py",
            "--steps",
            "2",
            "--prompts-per-step",
            "3",
            "--group-size",
            "4",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert [(s["step"], s["rollouts"], s["non_contiguous"], s["multi_turn"], s["turns"]) for s in steps] == [
        (0, 12, 0, 12, 24),
        (1, 12, 0, 12, 24),
    ]
    assert all(s["mean_reward"] == 1.0 and s["trained_tokens"] > 0 and s["context_tokens"] > 0 for s in steps)
    assert summary == {
        "steps": 2,
        "rollouts": 24,
        "multi_turn": 24,
        "non_contiguous": 0,
        "trained_tokens": sum(s["trained_tokens"] for s in steps),
    }
