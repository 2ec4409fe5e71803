"""`gym` end to end against the simulator: `gym env start --config …` starts the same servers as
`ng_run "+config_paths=[…]"`, and the eval commands work on the rollouts those servers produce."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.testing.processes import hermetic_env, ng_run, simulator

pytestmark = pytest.mark.e2e
VLLM = "responses_api_models/vllm_model/configs/vllm_model.yaml"
WEATHER = "resources_servers/simple_weather/configs/simple_weather.yaml"
DATA = "resources_servers/simple_weather/data/example.jsonl"


def shape(instances: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((i["name"], i["server_type"], i["implementation"]) for i in instances)


def gym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.main", *args],
        cwd=PROJECT_ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gym_env_start_starts_what_ng_run_starts_and_the_eval_commands_use_them(tmp_path: Path) -> None:
    with simulator() as (sim_url, _):
        model = ["+policy_base_url=" + sim_url, "+policy_api_key=EMPTY", "+policy_model_name=sim-model"]
        with ng_run(f"+config_paths=[{VLLM},{WEATHER}]", *model) as run:
            expected = shape(run.instances())
        assert expected == [
            ("policy_model", "responses_api_models", "responses_api_models/vllm_model"),
            ("simple_weather", "resources_servers", "resources_servers/simple_weather"),
            ("simple_weather_simple_agent", "responses_api_agents", "responses_api_agents/simple_agent"),
        ]
        flags = ["--config", VLLM, "--config", WEATHER, "--model-url", sim_url, "--model-api-key", "EMPTY"]
        with ng_run("env", "start", *flags, "--model", "sim-model", module="nemo_gym.cli.main") as gym_run:
            assert shape(gym_run.instances()) == expected
            head = f"+head_server.port={gym_run.head_port}"

            status = gym("env", "status", "--json", head)
            assert status.returncode == 0, status.stderr
            servers = json.loads(status.stdout)["servers"]
            assert sorted((s["name"], s["healthy"]) for s in servers) == [
                (name, True) for name, _, _ in expected
            ]

            rollouts = tmp_path / "weather.jsonl"
            collected = gym(
                "eval", "run", "--no-serve", "-a", "simple_weather_simple_agent", "-i", DATA,
                "-o", str(rollouts), "--num-repeats", "2", "--limit", "2", head,
            )  # fmt: skip
            assert collected.returncode == 0, collected.stderr
            rows = [json.loads(line) for line in rollouts.read_text().splitlines()]
            assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows) == [
                (0, 0), (0, 1), (1, 0), (1, 1),
            ]  # fmt: skip
            assert all(isinstance(r["reward"], float) for r in rows)

            reverified = tmp_path / "reverified.jsonl"
            again = gym("eval", "reverify", "--rollouts", str(rollouts), "-o", str(reverified), head)
            assert again.returncode == 0, again.stderr
            assert "4 re-verified (0 rewards changed), 0 failed" in again.stdout
            new_rows = {
                (r["_ng_task_index"], r["_ng_rollout_index"]): r for r in map(json.loads, reverified.open())
            }
            assert {k: r["reward"] for k, r in new_rows.items()} == {
                (r["_ng_task_index"], r["_ng_rollout_index"]): r["reward"] for r in rows
            }

        profile = gym("eval", "profile", "--rollouts", str(rollouts))
        assert profile.returncode == 0, profile.stderr
        assert "Reward profile: 4/4 rollouts over 2 tasks" in profile.stdout
        agents = json.loads((tmp_path / "weather_agent_metrics.json").read_text())
        mean = sum(r["reward"] for r in rows) / 4
        assert [(a["agent_ref"]["name"], a["mean/reward"]) for a in agents] == [
            ("simple_weather_simple_agent", pytest.approx(mean))
        ]

        merged = tmp_path / "merged.jsonl"
        aggregate = gym("eval", "aggregate", "-i", str(rollouts), "-o", str(merged), head)
        assert aggregate.returncode == 0, aggregate.stderr
        by_index = sorted(rows, key=lambda r: (r["_ng_task_index"], r["_ng_rollout_index"]))
        assert [json.loads(line) for line in merged.read_text().splitlines()] == by_index
        metrics = json.loads((tmp_path / "merged_aggregate_metrics.json").read_text())
        assert (metrics["num_rollouts"], metrics["num_failed"], metrics["reward"]) == (
            4,
            0,
            pytest.approx(mean),
        )
