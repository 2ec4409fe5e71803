"""Environment servers started by `ng_run` against the vLLM simulator: an episode POSTed to
`single_agent_turn`'s `/run`, a flat row relayed by `legacy_agent`, and rows routed by
`EnvironmentRoutes` the way rollout collection routes them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.http.server_client import ServerClient, close_shared_client
from nemo_gym.rollout_observability import AgentObservationBundle, TrajectoryRecord
from nemo_gym.rollouts.environment_routing import EnvironmentRoutes, record_from_answer
from nemo_gym.rollouts.trajectory import _attach_ng_perf, _attach_trajectory_record
from nemo_gym.task_materialization import materialize_task
from nemo_gym.testing.processes import ng_run, simulator

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
WEATHER_ROW = json.loads(
    (ROOT / "resources_servers/simple_weather/data/example.jsonl").read_text().splitlines()[0]
)
JUDGE_ROW = {
    "responses_create_params": {"input": "What is 2+2?"},
    "expected_answer": "Simulated answer to: What is 2+2?",
}

ENVIRONMENTS = """
observability_enabled: true
environment_server_routes:
  weather:example: weather_turn
  judge:example: judge_turn
weather_turn:
  environment_servers:
    single_agent_turn:
      entrypoint: app.py
      resources_server: {type: resources_servers, name: simple_weather}
      agent_server: {type: responses_api_agents, name: simple_weather_simple_agent}
      resources_tool_transports: [direct_http]
judge_turn:
  environment_servers:
    single_agent_turn:
      entrypoint: app.py
      resources_server: {type: resources_servers, name: equivalence_llm_judge}
      agent_server: {type: responses_api_agents, name: equivalence_llm_judge_simple_agent}
judge_relay:
  environment_servers:
    legacy_agent:
      entrypoint: app.py
      agent_server: {type: responses_api_agents, name: equivalence_llm_judge_simple_agent}
"""


def episode(taskset: str, row: dict[str, Any], rollout: str) -> dict[str, Any]:
    task = materialize_task(row, taskset=taskset, task_index=0)
    return {"episode_id": {"rollout_id": rollout}, "task": task}


def test_environment_servers_run_episodes_end_to_end(tmp_path: Path) -> None:
    config = tmp_path / "environments.yaml"
    config.write_text(ENVIRONMENTS)
    with simulator() as (url, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,"
            "resources_servers/simple_weather/configs/simple_weather.yaml,"
            f"resources_servers/equivalence_llm_judge/configs/equivalence_llm_judge.yaml,{config}]",
            f"+policy_base_url={url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+equivalence_llm_judge.resources_servers.equivalence_llm_judge.judge_model_server.name=policy_model",
            timeout=120,
        ) as run:
            names = {i["name"]: i for i in run.instances()}
            assert {names[n]["server_type"] for n in ("weather_turn", "judge_turn", "judge_relay")} == {
                "environment_servers"
            }

            # An episode POSTed straight to the environment server.
            answer = httpx.post(
                run.url_of("weather_turn") + "/run",
                json=episode("weather:example", WEATHER_ROW, "0-0"),
                timeout=60,
            ).json()
            assert answer["episode_id"] == {"rollout_id": "0-0", "attempt": 0}
            assert answer["task_id"] == {"taskset": "weather:example", "task_id": "0"}
            assert answer["failure"] is None
            result = answer["result"]
            assert result["reward"] == 1.0
            assert [item["type"] for item in result["response"]["output"]] == [
                "reasoning",
                "function_call",
                "function_call_output",
                "reasoning",
                "message",
            ]
            bundle = AgentObservationBundle.model_validate(result["ng_agent_observations"])
            invocation, tool = bundle.records
            assert (invocation.invocation_id, invocation.status, len(invocation.model_calls)) == (
                "root",
                "completed",
                2,
            )
            assert (tool.tool_name, tool.status) == ("get_weather", "completed")

            # A flat row relayed by legacy_agent comes back as the agent's own /run answer.
            relayed = httpx.post(
                run.url_of("judge_relay") + "/run",
                json={**JUDGE_ROW, "_ng_task_index": 0, "_ng_rollout_index": 0},
                timeout=60,
            ).json()
            assert relayed["reward"] == 1.0 and relayed["ng_trajectory"]["rollout_id"] == "0-0"
            assert [e["verdict"] for e in relayed["judge_evaluations"]] == ["equal"]

            # Rows routed as collection routes them, and the records it would store.
            client = ServerClient.load_from_global_config({"host": "127.0.0.1", "port": run.head_port})
            # The judge's agent is fronted twice (judge_turn, judge_relay), so flat rows name their server.
            routing = {
                "environment_routing_mode": "legacy",
                "environment_server_name": "judge_relay",
                "environment_server_routes": client.global_config["environment_server_routes"],
            }
            routes = EnvironmentRoutes.from_config(client.global_config, routing)
            rows = [
                {
                    **materialize_task(WEATHER_ROW, taskset="weather:example", task_index=0),
                    "_ng_task_index": 0,
                    "_ng_rollout_index": 1,
                },
                {
                    **materialize_task(JUDGE_ROW, taskset="judge:example", task_index=0),
                    "_ng_task_index": 0,
                    "_ng_rollout_index": 2,
                },
                {**JUDGE_ROW, "_ng_task_index": 1, "_ng_rollout_index": 0},
            ]

            async def route_all() -> list[dict[str, Any]]:
                records = []
                try:
                    for row, agent in zip(
                        rows, [None, None, "equivalence_llm_judge_simple_agent"], strict=True
                    ):
                        dispatch = routes.dispatch(row, agent)
                        reply = await client.post(dispatch.server, "/run", json=dispatch.body)
                        records.append(record_from_answer(row, await reply.json(), dispatch))
                finally:
                    await close_shared_client()
                return records

            weather, judged, flat = asyncio.run(route_all())
    assert (weather["reward"], weather["_ng_environment_server"], weather["_ng_result_type"]) == (
        1.0,
        "weather_turn",
        "single_agent_turn",
    )
    assert weather["_ng_task_id"] == {"taskset": "weather:example", "task_id": "0"}
    assert (judged["reward"], judged["_ng_environment_server"]) == (1.0, "judge_turn")
    assert (flat["reward"], flat["_ng_environment_server"], flat["_ng_result_type"]) == (
        1.0,
        "judge_relay",
        "legacy_agent",
    )

    # What collection attaches from the environment server's observations.
    _attach_trajectory_record(rows[0], weather)
    _attach_ng_perf(weather, observability_enabled=True, rollout_latency_ms=1.0)
    trajectory = TrajectoryRecord.model_validate(weather["ng_trajectory"])
    assert (trajectory.task_id, trajectory.rollout_id) == ("0", "0-1")
    assert [t.tool_name for t in trajectory.tool_calls] == ["get_weather"]
    # An observation bundle names model calls but carries none: without a model-call capture the
    # invocation counts as one turn whose tokens are unknown.
    assert weather["ng_perf"] == {
        "num_turns": 1,
        "num_tool_calls": 1,
        "token_observability_coverage": 0.0,
        "total_latency_ms": 1.0,
    }
