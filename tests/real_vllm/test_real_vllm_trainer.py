"""Opt-in, against a REAL `vllm serve` (`make test-real-vllm`): examples/trainer_loop.py, the way a
trainer drives nemo_gym (RunHelper + run_examples), on multi-turn tool rollouts with 0 non-contiguous.

The tiny model's text is random, so every turn is a forced tool call (tool_choice required, a strict
schema whose only field is an enum): simple_agent then runs to its max_steps, 3 model turns a rollout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.config import PROJECT_ROOT
from tests.real_vllm.helpers import URL, model_of

pytestmark = pytest.mark.real_vllm
CITY_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def forced_rows(path: Path) -> None:
    rows = []
    for city in ("Paris", "Oslo", "Lima"):
        params = {
            "input": [{"role": "user", "content": f"What is the weather in {city}?"}],
            "tools": [CITY_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_output_tokens": 128,
        }
        rows.append({"responses_create_params": params})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_trainer_loop_on_real_vllm_is_contiguous(tmp_path: Path) -> None:
    rows = tmp_path / "forced.jsonl"
    forced_rows(rows)
    agent_steps = {
        "simple_weather_simple_agent": {"responses_api_agents": {"simple_agent": {"max_steps": 3}}}
    }
    done = subprocess.run(
        [
            sys.executable,
            "examples/trainer_loop.py",
            "--policy-base-url",
            f"{URL}/v1",
            "--model",
            model_of(URL),
            "--rows-file",
            str(rows),
            "--steps",
            "2",
            "--prompts-per-step",
            "3",
            "--group-size",
            "4",
            "--temperature",
            "0",
            "--extra-keys",
            json.dumps(agent_steps),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]["summary"]
    print(f"\ntrainer loop on real vLLM: {summary}")
    assert summary["rollouts"] == 24 and summary["non_contiguous"] == 0
    assert summary["multi_turn"] >= 20 and summary["trained_tokens"] > 0
