"""Rollouts through the trainer API: what an RL trainer's rollout step costs, on 127.0.0.1 only.

Runs as NeMo RL / TRL do: `RunHelper.start(GlobalConfigDictParserConfig(...))` in this process
(the head server in a thread, the servers as children), then batches of rows through
`RolloutCollectionHelper.run_examples`, every row of a batch in flight at once. The model is the
bundled vLLM simulator in its own process (not ours, so not counted), in token mode
(`vllm_model_for_training.yaml`), as trainers run it.

It imports nothing but the trainer-facing names (`nemo_gym.cli`, `nemo_gym.rollout_collection`,
`nemo_gym.server_utils`) plus the standard library, so the same file measures NeMo Gym 0.7.0 when
run with that package installed: `--config-paths` and `--agent` name that package's configs.

CPU is utime+stime from /proc: "servers" is every descendant process of this one (the adapter,
agent and resources servers and their workers); "driver" is this process (the head server thread,
the client side of run_examples). Both over the measured batches, per rollout.

    python -m nemo_gym.bench.trainer_api --rows 256 --batches 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nemo_gym.testing.processes import children_of

CLK_TCK = os.sysconf("SC_CLK_TCK")
OUR_CONFIGS = (
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
OUR_AGENT = "simple_weather_simple_agent"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def servers_cpu(exclude: set[int]) -> float:
    total = 0.0
    for pid in children_of(os.getpid()) - exclude:
        try:
            total += _cpu(pid)
        except (OSError, ValueError, IndexError):
            pass
    return total


def driver_cpu() -> float:
    t = os.times()
    return t.user + t.system


def weather_rows(path: Path, n: int, agent: str) -> list[dict[str, Any]]:
    base = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i in range(n):
        row = json.loads(json.dumps(base[i % len(base)]))
        row["agent_ref"] = {"type": "responses_api_agents", "name": agent}
        row["_rowidx"] = i
        rows.append(row)
    return rows


async def run_batch(rch: Any, rows: list[dict[str, Any]], head: Any) -> tuple[int, int]:
    ok = failed = 0
    for task in rch.run_examples(examples=rows, head_server_config=head):
        try:
            _, result = await task
        except Exception:
            failed += 1
            continue
        if isinstance(result.get("reward"), int | float):
            ok += 1
        else:
            failed += 1
    return ok, failed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from omegaconf import DictConfig

    from nemo_gym.cli import GlobalConfigDictParserConfig, RunHelper
    from nemo_gym.rollout_collection import RolloutCollectionHelper
    from nemo_gym.server_utils import HEAD_SERVER_KEY_NAME, BaseServerConfig

    sim_port, head_port = _free_port(), _free_port()
    simulator = subprocess.Popen(
        [args.simulator_python, "-m", "nemo_gym.testing.vllm_simulator", "--port", str(sim_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=args.simulator_cwd,
    )
    low = random.randrange(30000, 45000)
    keys = {
        HEAD_SERVER_KEY_NAME: {"host": "127.0.0.1", "port": head_port},
        "config_paths": list(args.config_paths),
        "policy_base_url": f"http://127.0.0.1:{sim_port}/v1",
        "policy_api_key": "EMPTY",
        "policy_model_name": "sim-model",
        "port_range_low": low,
        "port_range_high": low + 299,
        "global_aiohttp_connector_limit_per_host": 16_384,
        "global_aiohttp_connector_limit": 65_536,
    }
    helper = RunHelper()
    try:
        _wait_for(f"http://127.0.0.1:{sim_port}/health", 60)
        helper.start(
            global_config_dict_parser_config=GlobalConfigDictParserConfig(
                initial_global_config_dict=DictConfig(keys), skip_load_from_cli=True
            )
        )
        head = BaseServerConfig(host="127.0.0.1", port=head_port)
        rch = RolloutCollectionHelper()
        rows = weather_rows(Path(args.rows_file), args.rows, args.agent)
        exclude = {simulator.pid}
        loop = asyncio.new_event_loop()
        try:
            for _ in range(args.warmup_batches):
                loop.run_until_complete(run_batch(rch, rows, head))
            started, servers0, driver0 = time.perf_counter(), servers_cpu(exclude), driver_cpu()
            ok = failed = 0
            for _ in range(args.batches):
                good, bad = loop.run_until_complete(run_batch(rch, rows, head))
                ok, failed = ok + good, failed + bad
            seconds = time.perf_counter() - started
            servers, driver = servers_cpu(exclude) - servers0, driver_cpu() - driver0
        finally:
            loop.close()
    finally:
        helper.shutdown()
        simulator.terminate()
        simulator.wait(timeout=30)
    n = max(1, ok + failed)
    return {
        "scenario": "trainer batches through run_examples (token mode)",
        "package": args.label,
        "concurrent_rows": args.rows,
        "batches": args.batches,
        "rollouts": ok + failed,
        "errors": failed,
        "seconds": round(seconds, 2),
        "rollouts_per_s": round((ok + failed) / seconds, 1),
        "servers_cpu_ms": round(servers * 1000 / n, 3),
        "driver_cpu_ms": round(driver * 1000 / n, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _wait_for(url: str, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout}s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256, help="rows per batch, all in flight at once")
    parser.add_argument("--batches", type=int, default=8, help="measured batches")
    parser.add_argument("--warmup-batches", type=int, default=1)
    parser.add_argument("--config-paths", nargs="+", default=list(OUR_CONFIGS))
    parser.add_argument("--agent", default=OUR_AGENT)
    parser.add_argument(
        "--rows-file", default=str(here / "resources_servers/simple_weather/data/example.jsonl")
    )
    parser.add_argument("--simulator-python", default=sys.executable, help="a Python with our simulator")
    parser.add_argument("--simulator-cwd", default=str(here))
    parser.add_argument("--label", default="nemo_gym (this repo)")
    return parser.parse_args(argv)


def run_subprocess(rows: int = 256, batches: int = 8) -> dict[str, Any]:
    """This benchmark in a process of its own (its servers are that process's children)."""
    done = subprocess.run(
        [sys.executable, "-m", "nemo_gym.bench.trainer_api", "--rows", str(rows), "--batches", str(batches)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, NEMO_GYM_ENV_YAML="none"),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"trainer_api benchmark failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def markdown_section(row: dict[str, Any]) -> list[str]:
    return [
        "## Rollouts through the trainer API",
        "",
        "As an RL trainer runs it: `RunHelper.start` in the benchmark's process (servers as its children), then "
        f"{row['batches']} batches of {row['concurrent_rows']} weather rows through "
        "`RolloutCollectionHelper.run_examples`, every row of a batch in flight at once, the adapter in token mode "
        "(`vllm_model_for_training.yaml`), the vLLM simulator as the model (its own process, not counted). "
        '"servers": the adapter, agent and resources processes; "driver": the trainer-side process (head server '
        "thread, run_examples). `python -m nemo_gym.bench.trainer_api` runs it alone; the same file measures "
        "NeMo Gym 0.7.0 when that package is installed instead (see the module's docstring).",
        "",
        "| rows in flight | rollouts/s | rollouts | errors | **servers CPU ms/rollout** | driver CPU ms/rollout | load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {row['concurrent_rows']} | {row['rollouts_per_s']:.1f} | {row['rollouts']} | {row['errors']} | "
        f"**{row['servers_cpu_ms']:.2f}** | {row['driver_cpu_ms']:.2f} | {row['loadavg_1m']:.1f} |",
    ]


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(measure(parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
