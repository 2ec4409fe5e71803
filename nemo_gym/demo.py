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

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import stop_process, wait_healthy

RESULTS = PROJECT_ROOT / "results"


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    env = dict(os.environ, NEMO_GYM_ENV_YAML="none", PYTHONUNBUFFERED="1")
    sim_port, head_port = free_port(), free_port()
    sim_log = (RESULTS / "demo_simulator.log").open("w")
    run_log_path = RESULTS / "demo_ng_run.log"
    run_log = run_log_path.open("w")
    started = time.monotonic()
    print(
        f"1/4 starting the vLLM simulator on 127.0.0.1:{sim_port} (a stand-in for `vllm serve`)", flush=True
    )
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nemo_gym.testing.vllm_simulator",
            "--port",
            str(sim_port),
            "--model",
            "sim-model",
            "--latency-ms",
            "20",
        ],
        stdout=sim_log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
        env=env,
    )
    run = None
    try:
        wait_healthy(f"http://127.0.0.1:{sim_port}/health", proc=sim)
        print(f"2/4 starting ng_run (head server 127.0.0.1:{head_port}); log: {run_log_path}", flush=True)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nemo_gym.cli.ng_run",
                "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,resources_servers/simple_weather/configs/simple_weather.yaml]",
                f"+policy_base_url=http://127.0.0.1:{sim_port}/v1",
                "+policy_api_key=EMPTY",
                "+policy_model_name=sim-model",
                f"+head_server.port={head_port}",
            ],
            stdout=run_log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while "servers ready" not in run_log_path.read_text():
            if run.poll() is not None or time.monotonic() > deadline:
                print(run_log_path.read_text()[-3000:], file=sys.stderr)
                print("error: ng_run did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print("3/4 collecting rollouts: 5 rows x 20 repeats, 50 in flight", flush=True)
        output = RESULTS / "demo_rollouts.jsonl"
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "nemo_gym.cli.ng_collect_rollouts",
                "+agent_name=simple_weather_simple_agent",
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                f"+output_jsonl_fpath={output}",
                "+num_repeats=20",
                "+concurrency=50",
                f"+head_server.port={head_port}",
            ],
            cwd=PROJECT_ROOT,
            env=env,
        )
        if code != 0:
            print(f"error: ng_collect_rollouts exited with {code}", file=sys.stderr)
            return code
        metrics = json.loads((RESULTS / "demo_rollouts_aggregate_metrics.json").read_text())
        print(
            f"4/4 done in {time.monotonic() - started:.1f}s: {metrics['num_rollouts']} rollouts, "
            f"mean reward {metrics.get('reward', float('nan')):.3f}, {metrics['num_failed']} failed.\n"
            f"    rollouts: {output}\n    metrics:  {RESULTS / 'demo_rollouts_aggregate_metrics.json'}\n"
            f"    failures: {RESULTS / 'demo_rollouts_failures.jsonl'}",
            flush=True,
        )
        return 0
    finally:
        if run is not None:
            stop_process(run, signal.SIGINT)
        stop_process(sim, signal.SIGTERM)
        run_log.close()
        sim_log.close()


if __name__ == "__main__":
    raise SystemExit(main())
