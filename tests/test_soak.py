"""Soak: 2,000 rollouts at concurrency 256 over two faulty simulators, one killed and restarted
mid-run. Every (row, repeat) ends up exactly once in the output or the failures file; a resumed
run completes the failures."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import (
    collect_rollouts_command,
    hermetic_env,
    ng_run,
    simulator,
    start_simulator,
    stop_process,
    wait_for_lines,
)

pytestmark = pytest.mark.e2e
CONFIGS = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,resources_servers/simple_weather/configs/simple_weather.yaml]"
ROWS, REPEATS = 5, 400


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def keys(rows: list[dict]) -> Counter:
    return Counter((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows)


def test_soak_nothing_lost_nothing_duplicated(tmp_path: Path) -> None:
    port_b = free_port()
    faults_b = ("--instance-id", "B", "--latency-ms", "20", "--fail-rate", "0.02", "--fail-mode", "drop")
    with simulator(
        "--instance-id", "A", "--latency-ms", "20", "--fail-rate", "0.02", "--fail-status", "500"
    ) as (url_a, _):
        proc_b = start_simulator(port_b, *faults_b)
        try:
            with ng_run(
                CONFIGS,
                f"+policy_base_url=[{url_a},http://127.0.0.1:{port_b}/v1]",
                "+policy_api_key=EMPTY",
                "+policy_model_name=sim-model",
                "+policy_model.responses_api_models.vllm_model.retry_backoff=0.02",
            ) as run:
                out = tmp_path / "soak.jsonl"
                failures = tmp_path / "soak_failures.jsonl"
                args = collect_rollouts_command(
                    run.head_port,
                    "+agent_name=simple_weather_simple_agent",
                    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                    f"+output_jsonl_fpath={out}",
                    f"+num_repeats={REPEATS}",
                    "+concurrency=256",
                )
                env = hermetic_env()
                started = time.monotonic()
                collector = subprocess.Popen(
                    args,
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                wait_for_lines(out, 400, 120, collector)
                proc_b.send_signal(signal.SIGKILL)  # one upstream dies mid-run
                proc_b.wait()
                wait_for_lines(out, 1000, 120, collector)
                proc_b = start_simulator(port_b, *faults_b)  # ... and comes back
                _, err = collector.communicate(timeout=180)
                wall = time.monotonic() - started
                assert collector.returncode == 0, err[-2000:]

                done, failed = keys(lines(out)), keys(lines(failures))
                everything = {(i, k) for i in range(ROWS) for k in range(REPEATS)}
                assert max(done.values()) == 1 and (not failed or max(failed.values()) == 1)  # no duplicates
                assert set(done) | set(failed) == everything and not set(done) & set(failed)  # nothing lost
                assert len(failed) < 200
                stats_b = httpx.get(f"http://127.0.0.1:{port_b}/sim/stats").json()

                for url in (url_a, f"http://127.0.0.1:{port_b}/v1"):  # faults off: the retry must complete
                    httpx.post(url.removesuffix("/v1") + "/sim/faults", json={"mode": None})
                resumed = subprocess.run(
                    [*args, "+resume_from_cache=true"],
                    cwd=PROJECT_ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                assert resumed.returncode == 0, resumed.stderr[-2000:]
                final = keys(lines(out))
                assert set(final) == everything and max(final.values()) == 1
                assert lines(failures) == []
                metrics = json.loads((tmp_path / "soak_aggregate_metrics.json").read_text())
                assert metrics["num_rollouts"] == ROWS * REPEATS and metrics["num_attempted_this_run"] == len(
                    failed
                )
                print(
                    f"\nsoak: attempted {ROWS * REPEATS}, succeeded {len(done)}, failed {len(failed)} (all completed on resume), "
                    f"lost 0, duplicated 0, wall {wall:.1f}s; restarted upstream B served {stats_b['requests']} requests after coming back"
                )
        finally:
            stop_process(proc_b)
