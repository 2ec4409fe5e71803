"""The simulator started by ng_run next to the adapter, and several simulators from one command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import ng_run, stop_process, wait_healthy

pytestmark = pytest.mark.e2e


def test_simulator_as_ng_run_instance() -> None:
    port = free_port()
    configs = "+config_paths=[responses_api_models/vllm_simulator/configs/vllm_simulator.yaml,responses_api_models/vllm_model/configs/vllm_model.yaml]"
    with ng_run(
        configs,
        f"+vllm_simulator.responses_api_models.vllm_simulator.port={port}",
        f"+policy_base_url=http://127.0.0.1:{port}/v1",
        "+policy_api_key=EMPTY",
        "+policy_model_name=sim-model",
    ) as run:
        out = httpx.post(f"{run.url_of('policy_model')}/v1/responses", json={"input": "ping"}).json()
        assert out["output"][0]["content"][0]["text"] == "Simulated answer to: ping"
        assert httpx.get(f"http://127.0.0.1:{port}/sim/stats").json()["instance_id"] == "vllm_simulator"


def consecutive_free_ports(n: int) -> int:
    """A base port such that base .. base+n-1 can all be bound right now."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            for port in range(base, base + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free ports")


def test_several_instances_from_one_command() -> None:
    base = consecutive_free_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.testing.vllm_simulator", "--port", str(base), "--count", "3"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for i in range(3):
            wait_healthy(f"http://127.0.0.1:{base + i}/health", proc=proc)
            assert httpx.get(f"http://127.0.0.1:{base + i}/sim/stats").json()["instance_id"] == str(i)
            r = httpx.post(
                f"http://127.0.0.1:{base + i}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "x"}]},
            )
            assert (
                r.headers["x-simulator-instance"] == str(i)
                and r.json()["system_fingerprint"] == f"vllm-sim-{i}"
            )
    finally:
        stop_process(proc, signal.SIGINT)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_a_misspelt_simulator_key_fails_the_start_with_a_suggestion() -> None:
    configs = "+config_paths=[responses_api_models/vllm_simulator/configs/vllm_simulator.yaml]"
    with pytest.raises(RuntimeError) as caught:
        with ng_run(
            configs,
            "+policy_model_name=sim-model",
            "+vllm_simulator.responses_api_models.vllm_simulator.max_modle_len=512",
            timeout=30,
        ):
            pass
    assert (
        "config key 'vllm_simulator.responses_api_models.vllm_simulator.max_modle_len' (from command line): "
        "is not a key of the vLLM simulator; did you mean `max_model_len`?"
    ) in str(caught.value)
