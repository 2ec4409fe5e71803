"""A minimal GRPO-style training loop over nemo_gym, written the way NeMo RL, veRL and TRL drive it.

It starts the servers in-process with `RunHelper`, sends each step's prompts (each repeated
`--group-size` times) through `RolloutCollectionHelper.run_examples`, and turns every result into
what a trainer feeds its loss: prompt ids, completion ids, a loss mask (1 on generated tokens, 0 on
tool results and template tokens), the engine's log-probs, and the reward, with group-normalised
advantages. Every rollout is checked for contiguity as those trainers check it; the run fails if
one is not. There is no model update here: the point is the data a trainer gets.

    # against the bundled vLLM simulator (started for you)
    .venv/bin/python examples/trainer_loop.py --steps 3 --prompts-per-step 4 --group-size 4
    # against a real vLLM server
    .venv/bin/python examples/trainer_loop.py --policy-base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-4B

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nemo_gym.cli import GlobalConfigDictParserConfig, RunHelper
from nemo_gym.rollout_collection import RolloutCollectionHelper
from nemo_gym.rollouts.training_tokens import NonContiguousRollout, TrainingSequence, training_sequence
from nemo_gym.server_utils import HEAD_SERVER_KEY_NAME, BaseServerConfig

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CONFIGS = [
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator() -> tuple[subprocess.Popen, str]:
    """The bundled vLLM simulator, when no real server is given."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.testing.vllm_simulator", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def grpo_advantages(rewards: list[float]) -> list[float]:
    """(reward - group mean) / (group std + eps), as GRPO normalises within a prompt's group."""
    mean = statistics.fmean(rewards)
    std = statistics.pstdev(rewards) if len(rewards) > 1 else 0.0
    return [(r - mean) / (std + 1e-6) for r in rewards]


async def collect_step(
    rch: RolloutCollectionHelper, prompts: list[dict[str, Any]], group_size: int, head: BaseServerConfig
) -> list[dict[str, Any]]:
    """One step: every prompt `group_size` times; results put back in row order by `_rowidx`."""
    batch = []
    for prompt in prompts:
        for _ in range(group_size):
            row = json.loads(json.dumps(prompt))
            row["_rowidx"] = len(batch)
            batch.append(row)
    results: list[dict[str, Any] | None] = [None] * len(batch)
    for task in rch.run_examples(examples=batch, head_server_config=head):
        row, result = await task
        results[row["_rowidx"]] = result
    return results  # type: ignore[return-value]


def summarize_step(results: list[dict[str, Any]], group_size: int) -> dict[str, Any]:
    sequences: list[TrainingSequence] = []
    non_contiguous = []
    for index, result in enumerate(results):
        try:
            sequences.append(training_sequence(result))
        except NonContiguousRollout as exc:
            non_contiguous.append(f"row {index}: {exc}")
    advantages = []
    for start in range(0, len(sequences), group_size):
        advantages += grpo_advantages([s.reward for s in sequences[start : start + group_size]])
    for sequence in sequences:
        assert len(sequence.completion_ids) == len(sequence.completion_mask) == len(sequence.logprobs)
    return {
        "rollouts": len(results),
        "non_contiguous": len(non_contiguous),
        "non_contiguous_examples": non_contiguous[:3],
        "multi_turn": sum(s.turns > 1 for s in sequences),
        "turns": sum(s.turns for s in sequences),
        "prompt_tokens": sum(len(s.prompt_ids) for s in sequences),
        "trained_tokens": sum(s.generated_tokens for s in sequences),
        "context_tokens": sum(len(s.completion_mask) - s.generated_tokens for s in sequences),
        "mean_reward": round(statistics.fmean(s.reward for s in sequences), 4) if sequences else None,
        "max_abs_advantage": round(max((abs(a) for a in advantages), default=0.0), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy-base-url", help="vLLM's /v1 URL (default: start the bundled simulator)")
    parser.add_argument("--model", default="sim-model", help="the served model name")
    parser.add_argument("--config-paths", nargs="+", default=TRAINING_CONFIGS)
    parser.add_argument("--agent", default="simple_weather_simple_agent")
    parser.add_argument(
        "--rows-file", default=str(ROOT / "resources_servers/simple_weather/data/example.jsonl")
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-output-tokens", type=int, default=None)
    parser.add_argument("--extra-keys", default="{}", help="more global keys for RunHelper, as JSON")
    args = parser.parse_args(argv)

    simulator = None
    base_url = args.policy_base_url
    if base_url is None:
        simulator, base_url = start_simulator()
    head_port = free_port()
    keys = {
        HEAD_SERVER_KEY_NAME: {"host": "127.0.0.1", "port": head_port},
        "config_paths": args.config_paths,
        "policy_base_url": base_url,
        "policy_api_key": "EMPTY",
        "policy_model_name": args.model,
        "global_aiohttp_connector_limit_per_host": 16_384,
        "global_aiohttp_connector_limit": 65_536,
        **json.loads(args.extra_keys),
    }
    rows = [json.loads(line) for line in Path(args.rows_file).read_text().splitlines() if line.strip()]
    for row in rows:
        row.setdefault("agent_ref", {"type": "responses_api_agents", "name": args.agent})
        params = row["responses_create_params"]
        params["temperature"] = args.temperature
        if args.max_output_tokens is not None:
            params["max_output_tokens"] = args.max_output_tokens

    helper = RunHelper()
    steps: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        helper.start(
            global_config_dict_parser_config=GlobalConfigDictParserConfig(
                initial_global_config_dict=DictConfig(keys), skip_load_from_cli=True
            )
        )
        rch = RolloutCollectionHelper()
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        for step in range(args.steps):
            prompts = [
                rows[(step * args.prompts_per_step + i) % len(rows)] for i in range(args.prompts_per_step)
            ]
            results = loop.run_until_complete(collect_step(rch, prompts, args.group_size, head))
            helper.poll()
            summary = {"step": step, **summarize_step(results, args.group_size)}
            steps.append(summary)
            print(json.dumps(summary), flush=True)
    finally:
        loop.close()
        helper.shutdown()
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=30)
    total = {
        "steps": len(steps),
        "rollouts": sum(s["rollouts"] for s in steps),
        "multi_turn": sum(s["multi_turn"] for s in steps),
        "non_contiguous": sum(s["non_contiguous"] for s in steps),
        "trained_tokens": sum(s["trained_tokens"] for s in steps),
    }
    print(json.dumps({"summary": total}), flush=True)
    return 1 if total["non_contiguous"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
