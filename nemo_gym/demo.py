"""`make demo`: the main job end to end against the bundled vLLM simulator.

Starts the simulator, starts `ng_run` with vllm_model + simple_weather pointed at it (your
env.yaml is neither read nor touched), collects 5 rows × 20 repeats at concurrency 50 into
results/demo_rollouts.jsonl, prints the metrics and where the files are, and shuts down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import stop_process, wait_healthy

RESULTS = PROJECT_ROOT / "results"
CONFIG_PATHS = "responses_api_models/vllm_model/configs/vllm_model.yaml,resources_servers/simple_weather/configs/simple_weather.yaml"
OUTPUT = RESULTS / "demo_rollouts.jsonl"
METRICS = RESULTS / "demo_rollouts_aggregate_metrics.json"


class DemoError(Exception):
    """A step failed; the message says which, the exit code what to return."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def start_logged(
    stack: ExitStack, args: list[str], log_path: Path, env: dict[str, str], stop_signal: int
) -> subprocess.Popen:
    """A child process writing to `log_path`, stopped with `stop_signal` when the stack closes."""
    log = stack.enter_context(log_path.open("w"))
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env)
    stack.callback(stop_process, proc, stop_signal)
    return proc


def start_simulator(stack: ExitStack, port: int, env: dict[str, str]) -> None:
    print(f"1/4 starting the vLLM simulator on 127.0.0.1:{port} (a stand-in for `vllm serve`)", flush=True)
    args = [sys.executable, "-m", "nemo_gym.testing.vllm_simulator", "--port", str(port)]
    sim = start_logged(
        stack,
        [*args, "--model", "sim-model", "--latency-ms", "20"],
        RESULTS / "demo_simulator.log",
        env,
        signal.SIGTERM,
    )
    wait_healthy(f"http://127.0.0.1:{port}/health", proc=sim)


def start_ng_run(stack: ExitStack, sim_port: int, head_port: int, env: dict[str, str]) -> None:
    log_path = RESULTS / "demo_ng_run.log"
    print(f"2/4 starting ng_run (head server 127.0.0.1:{head_port}); log: {log_path}", flush=True)
    args = [
        sys.executable,
        "-m",
        "nemo_gym.cli.ng_run",
        f"+config_paths=[{CONFIG_PATHS}]",
        f"+policy_base_url=http://127.0.0.1:{sim_port}/v1",
        "+policy_api_key=EMPTY",
        "+policy_model_name=sim-model",
        f"+head_server.port={head_port}",
    ]
    run = start_logged(stack, args, log_path, env, signal.SIGINT)
    deadline = time.monotonic() + 60
    while "servers ready" not in log_path.read_text():
        if run.poll() is not None or time.monotonic() > deadline:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise DemoError("ng_run did not start")
        time.sleep(0.1)


def collect(head_port: int, env: dict[str, str]) -> None:
    print("3/4 collecting rollouts: 5 rows x 20 repeats, 50 in flight", flush=True)
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.ng_collect_rollouts",
            "+agent_name=simple_weather_simple_agent",
            "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
            f"+output_jsonl_fpath={OUTPUT}",
            "+num_repeats=20",
            "+concurrency=50",
            f"+head_server.port={head_port}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
    )
    if code != 0:
        raise DemoError(f"ng_collect_rollouts exited with {code}", code)


def report(seconds: float) -> None:
    metrics = json.loads(METRICS.read_text())
    print(
        f"4/4 done in {seconds:.1f}s: {metrics['num_rollouts']} rollouts, "
        f"mean reward {metrics.get('reward', float('nan')):.3f}, {metrics['num_failed']} failed.\n"
        f"    rollouts: {OUTPUT}\n    metrics:  {METRICS}\n"
        f"    failures: {RESULTS / 'demo_rollouts_failures.jsonl'}",
        flush=True,
    )


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    env = dict(os.environ, NEMO_GYM_ENV_YAML="none", PYTHONUNBUFFERED="1")
    sim_port, head_port = free_port(), free_port()
    started = time.monotonic()
    try:
        with ExitStack() as stack:  # stops ng_run, then the simulator
            start_simulator(stack, sim_port, env)
            start_ng_run(stack, sim_port, head_port, env)
            collect(head_port, env)
            report(time.monotonic() - started)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
