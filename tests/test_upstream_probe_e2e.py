"""ng_run and ng_status look past the model server at the vLLM behind it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import hermetic_env, ng_run, simulator

pytestmark = pytest.mark.e2e
VLLM = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]"


def status(head_port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.ng_status", f"+head_server.port={head_port}"],
        cwd=PROJECT_ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dead_upstream_is_loud_in_ng_run_and_fails_ng_status() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with simulator() as (sim_url, _):
        with ng_run(
            VLLM,
            f"+policy_base_url=[{sim_url},{dead}]",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
        ) as run:
            line = run.wait_for(f"WARNING: policy_model: upstream {dead} is unreachable (ConnectError: ", 20)
            assert f"upstream {sim_url} " not in line
            result = status(run.head_port)
            assert result.returncode == 1
            assert "1/1 healthy\n" in result.stdout and "1/2 upstreams healthy\n" in result.stdout
            table = result.stdout.split("model server")[1]
            assert f"policy_model  {sim_url}" in table and " healthy " in table
            assert f"policy_model  {dead}" in table and " unhealthy " in table


def test_upstream_serving_another_model_is_named_with_what_it_serves() -> None:
    with simulator() as (sim_url, _):
        with ng_run(
            VLLM, f"+policy_base_url={sim_url}", "+policy_api_key=EMPTY", "+policy_model_name=other-model"
        ) as run:
            run.wait_for(
                f"WARNING: policy_model: upstream {sim_url} does not serve the configured model "
                "'other-model'; it serves: sim-model",
                20,
            )
            result = status(run.head_port)
            assert result.returncode == 0, result.stdout
            assert "1/1 upstreams healthy\n" in result.stdout


def test_require_upstreams_makes_a_dead_upstream_a_start_failure() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.ng_run",
            VLLM,
            f"+policy_base_url={dead}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=m",
            "+require_upstreams=true",
            f"+head_server.port={free_port()}",
        ],
        cwd=PROJECT_ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 1
    assert "All 1 servers ready" in result.stdout
    assert f"error: policy_model: upstream {dead} is unreachable (ConnectError: " in result.stderr
    assert "error: 1 upstream(s) not usable and +require_upstreams=true; shutting down." in result.stderr
