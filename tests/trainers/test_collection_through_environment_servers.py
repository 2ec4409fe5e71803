"""Collection routes through an environment server when the config puts one in front of the agent,
and with observability on, every written row carries NeMo Gym's trajectory and `ng_perf`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.http.server_client import close_shared_client
from nemo_gym.rollout_collection import RolloutCollectionHelper
from nemo_gym.server_utils import BaseServerConfig
from nemo_gym.testing.processes import collect_rollouts_command, hermetic_env, ng_run, simulator
from nemo_gym.testing.trainer_flows import AGENT, rows

pytestmark = pytest.mark.e2e
RELAY = f"""
observability_enabled: true
weather_relay:
  environment_servers:
    legacy_agent:
      entrypoint: app.py
      agent_server: {{type: responses_api_agents, name: {AGENT}}}
"""


def test_rows_go_through_the_environment_server_and_carry_the_trajectory(tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(RELAY)
    out = tmp_path / "rollouts.jsonl"
    with simulator() as (url, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model_for_training.yaml,"
            f"resources_servers/simple_weather/configs/simple_weather.yaml,{config}]",
            f"+policy_base_url={url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            timeout=120,
        ) as run:
            relay = run.url_of("weather_relay")
            done = subprocess.run(
                collect_rollouts_command(
                    run.head_port,
                    f"+agent_name={AGENT}",
                    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                    f"+output_jsonl_fpath={out}",
                    "+limit=2",
                    "+num_repeats=2",
                ),
                cwd=PROJECT_ROOT,
                env=hermetic_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-3000:]

            async def through_the_api() -> list:
                try:
                    head = BaseServerConfig(host="127.0.0.1", port=run.head_port)
                    return [
                        await t
                        for t in RolloutCollectionHelper().run_examples(rows(2), head_server_config=head)
                    ]
                finally:
                    await close_shared_client()

            api_results = asyncio.run(through_the_api())
            metrics = httpx.get(f"{relay}/metrics").text
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in written) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    for row in written:
        assert (row["reward"], row["_ng_environment_server"], row["_ng_result_type"]) == (
            1.0,
            "weather_relay",
            "legacy_agent",
        )
        trajectory = row["ng_trajectory"]
        assert trajectory["rollout_id"] == f"{row['_ng_task_index']}-{row['_ng_rollout_index']}"
        assert [turn["turn_no"] for turn in trajectory["turns"]] == [1, 2]
        assert (row["ng_perf"]["num_turns"], row["ng_perf"]["num_tool_calls"]) == (2, 1)
    # run_examples routes the same way and hands back the agent's own answer, with no collector fields
    assert [r["reward"] for _, r in api_results] == [1.0, 1.0]
    assert all("_ng_environment_server" not in r for _, r in api_results)
    assert (
        'nemo_gym_requests_total{route="/run",status="200"} 6.0' in metrics
    )  # 4 collected + 2 through the API
