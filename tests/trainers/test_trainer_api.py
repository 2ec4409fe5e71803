"""The in-process API RL trainers drive (NeMo RL, veRL, TRL), called the way each of them calls it.

Each test starts the servers with `RunHelper.start(GlobalConfigDictParserConfig(...))` from this
process, with the trainer's own set of global keys, and collects through
`RolloutCollectionHelper.run_examples` against the vLLM simulator in token mode.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.cli import RunHelper
from nemo_gym.config.instances import port_in_range
from nemo_gym.http.server_client import close_shared_client
from nemo_gym.rollout_collection import RolloutCollectionHelper, RolloutRunError
from nemo_gym.rollouts.training_tokens import training_sequence
from nemo_gym.runner.run_helper import ServerDiedError
from nemo_gym.server_utils import BaseServerConfig
from nemo_gym.testing.processes import children_of, pid_alive, simulator
from nemo_gym.testing.trainer_flows import (
    AGENT,
    collect,
    nemo_rl_keys,
    port_window,
    rows,
    start,
    trl_keys,
    verl_keys,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_simulators() -> Iterator[list[str]]:
    with simulator() as (a, _), simulator() as (b, _):
        yield [a, b]


def assert_stopped(helper: RunHelper, pids: set[int], ports: list[int]) -> None:
    assert not [p for p in pids if pid_alive(p)]
    assert not children_of(os.getpid()) & pids
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # raises if anything still listens there


def test_nemo_rl_flow_two_batches_poll_kill_and_shutdown(two_simulators: list[str], tmp_path: Path) -> None:
    window = port_window()
    head_port = port_in_range("0.0.0.0", *window, taken=())
    helper = start(
        nemo_rl_keys(two_simulators, head_port, window), dotenv=tmp_path / "nemo_rl" / "nemo_gym_env.yaml"
    )
    try:
        servers = helper.server_instances()
        assert {s["name"] for s in servers} == {"policy_model", "simple_weather", AGENT}
        assert all(window[0] <= s["port"] <= window[1] and s["host"] == "127.0.0.1" for s in servers)
        helper.poll()
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        rch = RolloutCollectionHelper()

        async def two_batches() -> tuple[list, list]:
            try:
                return await collect(rch, rows(12), head), await collect(rch, rows(7), head)
            finally:
                await close_shared_client()

        first, second = asyncio.run(two_batches())
        for batch, n in ((first, 12), (second, 7)):
            assert sorted(row["_rowidx"] for row, _ in batch) == list(range(n))
            for row, result in batch:
                assert result["reward"] == 1.0
                sent = [(m["role"], m["content"]) for m in row["responses_create_params"]["input"]]
                echoed = [(m["role"], m["content"]) for m in result["responses_create_params"]["input"]]
                assert echoed == sent
                assert training_sequence(result).turns == 2
        helper.poll()
        victim = next(s for s in servers if s["name"] == "simple_weather")
        os.kill(victim["pid"], signal.SIGKILL)
        with pytest.raises(
            ServerDiedError, match=r"server 'simple_weather' \(resources_servers/simple_weather"
        ):
            for _ in range(100):
                helper.poll()
                asyncio.run(asyncio.sleep(0.05))
    finally:
        pids = {s["pid"] for s in helper.server_instances()}
        helper.shutdown()
    assert_stopped(helper, pids, [head_port, *(s["port"] for s in servers)])
    helper.shutdown()  # a second call does nothing


def test_trl_flow_one_loop_run_until_complete_and_hf_token(two_simulators: list[str]) -> None:
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    helper = start(trl_keys(two_simulators[0], head_port))
    servers = helper.server_instances()
    loop = asyncio.new_event_loop()
    try:
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        rch = RolloutCollectionHelper()
        for n in (5, 9):  # two trainer steps on one loop, as TRL's rollout_func does
            batch = rows(n)
            got = loop.run_until_complete(collect(rch, batch, head))
            by_idx = {row["_rowidx"]: result for row, result in got}
            assert sorted(by_idx) == list(range(n))
            sequences = [training_sequence(by_idx[i]) for i in range(n)]
            assert all(s.turns == 2 and s.reward == 1.0 for s in sequences)
        agent_pid = next(s["pid"] for s in servers if s["name"] == AGENT)
        environ = Path(f"/proc/{agent_pid}/environ").read_bytes().split(b"\0")
        assert b"HF_TOKEN=hf_test_token_not_real" in environ
        config_yaml = httpx.get(f"http://127.0.0.1:{head_port}/global_config_dict_yaml").text
        assert "hf_test_token_not_real" not in config_yaml and "hf_token: <redacted>" in config_yaml
    finally:
        loop.run_until_complete(close_shared_client())
        loop.close()
        helper.shutdown()
    assert_stopped(helper, {s["pid"] for s in servers}, [head_port])


def test_verl_keys_and_a_failure_that_pickles_with_its_status(
    two_simulators: list[str], tmp_path: Path
) -> None:
    window = port_window()
    head_port = port_in_range("0.0.0.0", *window, taken=())
    helper = start(verl_keys(two_simulators, head_port, window, tmp_path))
    try:
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        rch = RolloutCollectionHelper()
        bad = rows(2)
        bad[1]["responses_create_params"]["input"] = 42  # the agent answers 422 for this row

        async def run(**kw: Any) -> list:
            try:
                return await collect(rch, bad, head, **kw)
            finally:
                await close_shared_client()

        with pytest.raises(RolloutRunError) as info:
            asyncio.run(run())
        error = pickle.loads(pickle.dumps(info.value))
        assert (type(error), error.status) == (RolloutRunError, 422)
        assert str(error) == str(info.value)
        assert f"agent '{AGENT}' /run returned HTTP 422: " in str(error) and "_rowidx=1" in str(error)

        routed = asyncio.run(run(route_failures_to_sidecar=True))
        failures = {row["_rowidx"]: result for row, result in routed}
        assert failures[0]["reward"] == 1.0
        assert failures[1]["_ng_failure_class"] == "agent_run_error"
        assert failures[1]["_ng_failure_http_status"] == 422
        assert "_ng_failure_message" in failures[1] and "reward" not in failures[1]
    finally:
        helper.shutdown()


def test_rows_are_admitted_as_they_are_consumed(two_simulators: list[str]) -> None:
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    helper = start(trl_keys(two_simulators[0], head_port))
    try:
        rch = RolloutCollectionHelper()
        head = BaseServerConfig(host="127.0.0.1", port=head_port)

        async def run() -> tuple[int, int, int]:
            try:
                pending = rch.run_examples(rows(120), head_server_config=head, max_resident_tasks=8)
                taken = 0
                most_tasks = 0
                for task in pending:
                    await task
                    taken += 1
                    most_tasks = max(most_tasks, len(asyncio.all_tasks()))
                return taken, pending.peak_resident, most_tasks
            finally:
                await close_shared_client()

        taken, peak, most_tasks = asyncio.run(run())
        assert taken == 120 and peak == 8
        assert most_tasks <= 8 + 1  # the resident rollouts and the test's own task
    finally:
        helper.shutdown()


def test_unknown_agent_and_missing_agent_ref_fail_before_anything_starts(two_simulators: list[str]) -> None:
    head_port = port_in_range("0.0.0.0", *port_window(), taken=())
    helper = start(trl_keys(two_simulators[0], head_port))
    try:
        rch = RolloutCollectionHelper()
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        wrong = rows(2)
        wrong[1]["agent_ref"]["name"] = "no_such_agent"
        with pytest.raises(
            ValueError, match=r"rows name agents the running servers do not have: \['no_such_agent'\]"
        ):
            rch.run_examples(wrong, head_server_config=head)
        with pytest.raises(ValueError, match=r"rows 0, 1 have no agent_ref name"):
            rch.run_examples(rows(2, agent_ref=False), head_server_config=head)
        expanded = rch.preprocess_examples(
            rows(2, agent_ref=False), agent_map={"_default": AGENT}, num_repeats=3
        )
        assert [(r["_ng_task_index"], r["_ng_rollout_index"], r["_rowidx"]) for r in expanded] == [
            (0, 0, 0),
            (0, 1, 0),
            (0, 2, 0),
            (1, 0, 1),
            (1, 1, 1),
            (1, 2, 1),
        ]
    finally:
        helper.shutdown()
