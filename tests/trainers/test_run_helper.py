"""RunHelper and run_examples beyond the happy path: addressing for several nodes, contiguity at
scale, timeouts that name the call, dry runs, and the start-up checks a trainer's keys get."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nemo_gym.config import ConfigError
from nemo_gym.config.instances import port_in_range
from nemo_gym.http.server_client import ServerCallTimeout, close_shared_client
from nemo_gym.rollout_collection import RolloutCollectionHelper
from nemo_gym.rollouts.training_tokens import NonContiguousRollout, training_sequence
from nemo_gym.runner.run_helper import RunHelper
from nemo_gym.server_utils import BaseServerConfig
from nemo_gym.testing.processes import pid_alive, simulator
from nemo_gym.testing.trainer_flows import AGENT, nemo_rl_keys, port_window, rows, start, trl_keys

pytestmark = pytest.mark.e2e


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def test_default_host_is_where_servers_listen_and_what_they_advertise() -> None:
    """A node address (here a second loopback address) and a head server on every interface."""
    window = port_window()
    head_port = port_in_range("0.0.0.0", *window, taken=())
    with simulator() as (sim, _):
        keys = nemo_rl_keys([sim], head_port, window) | {"default_host": "127.0.0.2"}
        helper = start(keys)
        try:
            servers = helper.server_instances()
            for server in servers:
                assert server["host"] == "127.0.0.2"
                assert server["url"] == f"http://127.0.0.2:{server['port']}"
                assert _listening("127.0.0.2", server["port"]) and not _listening("127.0.0.1", server["port"])
            head = httpx.get(f"http://127.0.0.2:{head_port}/server_instances").json()
            assert [s["url"] for s in head] == [s["url"] for s in servers]
            config = yaml.safe_load(httpx.get(f"http://127.0.0.2:{head_port}/global_config_dict_yaml").text)
            hosts = {
                config[s["name"]][s["server_type"]][s["implementation"].split("/")[1]]["host"]
                for s in servers
            }
            assert hosts == {"127.0.0.2"}
            text = httpx.get(f"http://127.0.0.2:{head_port}/global_config_dict_yaml").text
            assert "localhost" not in text and "127.0.0.1:" not in text.replace(sim.removesuffix("/v1"), "")

            async def one() -> list:
                try:
                    rch = RolloutCollectionHelper()
                    head_cfg = BaseServerConfig(host="127.0.0.2", port=head_port)
                    return [await t for t in rch.run_examples(rows(3), head_server_config=head_cfg)]
                finally:
                    await close_shared_client()

            assert [r["reward"] for _, r in asyncio.run(one())] == [1.0, 1.0, 1.0]
        finally:
            helper.shutdown()


def test_two_hundred_multi_turn_tool_rollouts_are_contiguous_in_token_mode() -> None:
    """Every rollout's later prompts start with everything before them, checked as trainers do."""
    window = port_window()
    head_port = port_in_range("0.0.0.0", *window, taken=())
    with simulator() as (a, _), simulator() as (b, _):
        helper = start(nemo_rl_keys([a, b], head_port, window))
        try:

            async def run() -> list:
                try:
                    rch = RolloutCollectionHelper()
                    head = BaseServerConfig(host="127.0.0.1", port=head_port)
                    pending = rch.run_examples(rows(240), head_server_config=head, max_resident_tasks=48)
                    return [await task for task in pending]
                finally:
                    await close_shared_client()

            results = asyncio.run(run())
        finally:
            helper.shutdown()
    outcomes: Counter[str] = Counter()
    turns: Counter[int] = Counter()
    for _, result in results:
        try:
            sequence = training_sequence(result)
        except NonContiguousRollout:
            outcomes["non-contiguous"] += 1
            continue
        outcomes["contiguous"] += 1
        turns[sequence.turns] += 1
        assert len(sequence.completion_ids) == len(sequence.completion_mask) == len(sequence.logprobs)
        assert sequence.generated_tokens > 0 and 0 in sequence.completion_mask  # the tool result is context
    assert outcomes == {"contiguous": 240}
    assert turns == {2: 240}


def test_a_hung_agent_times_out_naming_the_call() -> None:
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    with simulator() as (sim, _):
        helper = start(trl_keys(sim, head_port))
        agent = next(s for s in helper.server_instances() if s["name"] == AGENT)
        try:
            os.kill(agent["pid"], signal.SIGSTOP)

            async def run() -> None:
                try:
                    rch = RolloutCollectionHelper()
                    head = BaseServerConfig(host="127.0.0.1", port=head_port)
                    for task in rch.run_examples(rows(1), head_server_config=head, rollout_timeout_s=1.0):
                        await task
                finally:
                    await close_shared_client()

            with pytest.raises(ServerCallTimeout) as info:
                asyncio.run(run())
            assert str(info.value).startswith(f"POST {agent['url']}/run sent no answer byte for 1 s")
        finally:
            os.kill(agent["pid"], signal.SIGCONT)
            helper.shutdown()


def test_shutdown_from_another_thread_with_no_event_loop() -> None:
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    with simulator() as (sim, _):
        helper = start(trl_keys(sim, head_port))
        pids = [s["pid"] for s in helper.server_instances()]
        stopper = threading.Thread(target=helper.shutdown)
        stopper.start()
        stopper.join(timeout=60)
        assert not stopper.is_alive()
        assert not [p for p in pids if pid_alive(p)]
        assert not _listening("127.0.0.1", head_port)


def test_servers_outlive_the_thread_that_started_them() -> None:
    """Children die with their parent *thread* (PR_SET_PDEATHSIG); RunHelper spawns from its own."""
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    with simulator() as (sim, _):
        box: dict[str, Any] = {}
        starter = threading.Thread(target=lambda: box.update(helper=start(trl_keys(sim, head_port))))
        starter.start()
        starter.join(timeout=120)
        helper: RunHelper = box["helper"]
        try:
            asyncio.run(asyncio.sleep(0.5))
            helper.poll()
            assert all(pid_alive(s["pid"]) for s in helper.server_instances())
        finally:
            helper.shutdown()


def test_dry_run_resolves_and_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    window = port_window()
    keys = {"dry_run": True, "skip_verification": True, "skip_verification_reward": 0.25}
    helper = start(nemo_rl_keys(["http://127.0.0.1:9/v1"], 0, window) | keys)
    out = capsys.readouterr().out
    assert "Dry run: 3 servers resolved; none started." in out
    assert all(s["pid"] is None and window[0] <= s["port"] <= window[1] for s in helper.server_instances())
    agent = helper.global_config[AGENT]["responses_api_agents"]["simple_agent"]
    assert (agent["skip_verification"], agent["skip_verification_reward"]) == (True, 0.25)
    helper.poll()
    helper.shutdown()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"port_rang_low": 5000},
            "'port_rang_low' (from initial_global_config_dict): is not a key of RunHelper; did you mean `port_range_low`?",
        ),
        (
            {"port_range_low": 7000, "port_range_high": 6000},
            "port_range_low (7000) is above port_range_high (6000)",
        ),
        (
            {"server_spinup_timeout_seconds": "soon"},
            "'server_spinup_timeout_seconds' (from initial_global_config_dict): Input should be a valid number",
        ),
    ],
)
def test_bad_trainer_keys_fail_at_start_naming_key_and_source(extra: dict, message: str) -> None:
    keys = nemo_rl_keys(["http://127.0.0.1:9/v1"], 0, port_window()) | extra
    with pytest.raises(ConfigError) as info:
        start(keys).shutdown()
    assert message in str(info.value)


def test_model_endpoint_readiness_timeout_names_the_upstream() -> None:
    window = port_window()
    head_port = port_in_range("0.0.0.0", *window, taken=())
    keys = trl_keys("http://127.0.0.1:9/v1", head_port) | {"model_endpoint_readiness_timeout_seconds": 1}
    with pytest.raises(ConfigError) as info:
        start(keys).shutdown()
    text = str(info.value)
    assert text.startswith(
        "config key 'model_endpoint_readiness_timeout_seconds' (from initial_global_config_dict)"
    )
    assert "policy_model: upstream http://127.0.0.1:9/v1 is unreachable" in text
    assert not _listening("127.0.0.1", head_port)  # what was started is stopped


def test_a_missing_dotenv_path_is_no_env_yaml(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text("policy_model_name: from-env-yaml\nmy_var: 3\n")
    window = port_window()
    keys = nemo_rl_keys(["http://127.0.0.1:9/v1"], 0, window) | {"dry_run": True}
    assert start(keys, dotenv=tmp_path / "absent.yaml").global_config.get("my_var") is None
    present = start(keys, dotenv=env).global_config
    # the trainer's keys rank above env.yaml, as in NeMo Gym
    assert (present["my_var"], present["policy_model_name"]) == (3, "sim-model")
