"""NeMo RL's shape: the servers started from inside a Ray actor of the trainer's own Ray cluster.

The actor starts them with NeMo RL's keys (`ray_head_node_address` = the trainer's cluster),
collects rollouts, moves a `/run` failure to the driver through Ray (it must arrive with its status),
and shuts down from a later actor call. Runs in `make test-compat` (the `ray` extra).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.config.instances import port_in_range
from nemo_gym.testing.processes import pid_alive, simulator
from nemo_gym.testing.trainer_flows import AGENT, nemo_rl_keys, port_window, rows

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
RAY_SERVER = Path(__file__).resolve().parents[1] / "servers" / "ray_server" / "app.py"


class GymActor:
    """What NeMo RL's `NemoGym` actor does with the API, reduced to the calls."""

    def spinup(self, keys: dict[str, Any]) -> list[dict[str, Any]]:
        from omegaconf import DictConfig

        from nemo_gym.cli import GlobalConfigDictParserConfig, RunHelper

        self.helper = RunHelper()
        self.helper.start(
            global_config_dict_parser_config=GlobalConfigDictParserConfig(
                dotenv_path=Path("/nonexistent/nemo_gym_env.yaml"),
                initial_global_config_dict=DictConfig(keys),
                skip_load_from_cli=True,
            )
        )
        return self.helper.server_instances()

    def run_rollouts(self, batch: list[dict[str, Any]], head_port: int) -> list[tuple[int, float, int]]:
        from nemo_gym.http.server_client import close_shared_client
        from nemo_gym.rollout_collection import RolloutCollectionHelper
        from nemo_gym.rollouts.training_tokens import training_sequence
        from nemo_gym.server_utils import BaseServerConfig

        async def run() -> list[tuple[int, float, int]]:
            try:
                out = []
                head = BaseServerConfig(host="127.0.0.1", port=head_port)
                for task in RolloutCollectionHelper().run_examples(examples=batch, head_server_config=head):
                    row, result = await task
                    out.append((row["_rowidx"], result["reward"], training_sequence(result).turns))
                return out
            finally:
                await close_shared_client()

        return asyncio.run(run())

    def health_check(self) -> None:
        self.helper.poll()

    def shutdown(self) -> None:
        self.helper.shutdown()


def test_servers_started_in_a_ray_actor_of_the_trainers_cluster() -> None:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nemo-gym[ray]'")
    from nemo_gym.rollout_collection import RolloutRunError

    ray.init(address="local", include_dashboard=False)
    try:
        gcs = ray.get_runtime_context().gcs_address
        window = port_window()
        head_port = port_in_range("0.0.0.0", *window, taken=())
        with simulator() as (sim, _):
            keys = nemo_rl_keys([sim], head_port, window) | {
                "ray_head_node_address": gcs,
                "ray_square": {"resources_servers": {"ray_server": {"entrypoint": str(RAY_SERVER)}}},
            }
            actor = ray.remote(GymActor).remote()
            servers = ray.get(actor.spinup.remote(keys), timeout=180)
            assert {s["name"] for s in servers} == {"policy_model", "simple_weather", AGENT, "ray_square"}
            square = next(s for s in servers if s["name"] == "ray_square")
            answer = httpx.post(square["url"] + "/square", json={"x": 6}, timeout=60).json()
            assert (answer["value"], answer["address"]) == (36, gcs)  # it joined the trainer's cluster

            done = ray.get(actor.run_rollouts.remote(rows(8), head_port), timeout=180)
            assert sorted(done) == [(i, 1.0, 2) for i in range(8)]
            ray.get(actor.health_check.remote(), timeout=30)

            bad = rows(1)
            bad[0]["responses_create_params"]["input"] = 42
            with pytest.raises(ray.exceptions.RayTaskError) as info:
                ray.get(actor.run_rollouts.remote(bad, head_port), timeout=180)
            cause = info.value.cause
            # The agent's own request model refuses the row (FastAPI's 422, as NeMo Gym's agents do).
            assert isinstance(cause, RolloutRunError) and cause.status == 422
            assert f"agent '{AGENT}' /run returned HTTP 422" in str(cause)

            ray.get(actor.shutdown.remote(), timeout=120)
            assert not [s["pid"] for s in servers if pid_alive(s["pid"])]
            ray.kill(actor)
    finally:
        ray.shutdown()
