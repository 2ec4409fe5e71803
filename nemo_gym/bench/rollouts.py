"""End-to-end rollouts: weather rollouts/s and the servers' CPU per rollout, on 127.0.0.1 only.

Starts one `ng_run` with the bundled vLLM simulator as an instance, the vllm_model adapter,
the simple_weather resources server and simple_agent, all on free ports. Then drives the
agent's `/run` with the weather rows (repeated) from one aiohttp client (no cookie jar: each
`/run` is one rollout) at a fixed concurrency: a warm-up of `--warmup` rollouts, then a window
that ends after `--rollouts` more have completed or `--duration` seconds, whichever is first.
There is no pause between warm-up and window, so the window is steady state.

CPU is utime+stime from /proc/<pid>/stat of each of ng_run's children and their descendants
(workers), read at the window's edges, divided by the rollouts completed in the window. The
simulator stands in for vLLM and is not ours, so it is reported apart from the servers' total;
ng_run itself (head server, log pump) is reported apart too.

    python -m nemo_gym.bench.rollouts --concurrency 32 256
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import children_of, process_parents

CLK_TCK = os.sysconf("SC_CLK_TCK")
WEATHER_ROWS = PROJECT_ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
CONFIG_PATHS = (
    "responses_api_models/vllm_simulator/configs/vllm_simulator.yaml",
    "responses_api_models/vllm_model/configs/vllm_model.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
AGENT = "simple_weather_simple_agent"
# ng_run's children, by the directory of their entrypoint (robust to instance renames).
ROLES = {
    "simple_agent": "agent",
    "simple_weather": "resources",
    "vllm_model": "adapter",
    "vllm_simulator": "simulator",
}
SERVER_ROLES = ("agent", "resources", "adapter")
WARMUP, ROLLOUTS, DURATION = 200, 2000, 30.0  # the defaults: warm-up, window bound in count and in seconds


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads; children excluded)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _role_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        parts = Path(arg.decode(errors="replace")).parts
        if len(parts) >= 2 and parts[-1] == "app.py" and parts[-2] in ROLES:
            return ROLES[parts[-2]]
    return None


def server_pids(ng_run_pid: int) -> dict[str, int]:
    """role -> pid of each of ng_run's direct children."""
    parents = process_parents()
    out: dict[str, int] = {}
    for child, parent in parents.items():
        if parent == ng_run_pid and (role := _role_of(child)):
            out[role] = child
    return out


def cpu_by_role(ng_run_pid: int, roles: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each server's process tree (workers included), and of ng_run itself."""
    parents = process_parents()
    out: dict[str, float] = {}
    for role, pid in roles.items():
        total = 0.0
        for p in {pid} | children_of(pid, parents):
            try:
                total += cpu_seconds(p)
            except (OSError, IndexError, ValueError):
                pass  # a worker that exited between the listing and the read
        out[role] = total
    out["ng_run"] = cpu_seconds(ng_run_pid)
    return out


def client_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Stack:
    proc: subprocess.Popen
    head_port: int
    sim_port: int
    log_path: Path
    roles: dict[str, int] = field(default_factory=dict)
    agent_url: str = ""


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start_stack(timeout: float = 120.0) -> Stack:
    """ng_run with simulator + adapter + simple_weather + simple_agent on free ports."""
    sim_port, head_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench_rollouts_ng_run_", suffix=".log", delete=False)
    env = dict(os.environ, NEMO_GYM_ENV_YAML="none", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.ng_run",
            f"+config_paths=[{','.join(CONFIG_PATHS)}]",
            f"+vllm_simulator.responses_api_models.vllm_simulator.port={sim_port}",
            f"+policy_base_url=http://127.0.0.1:{sim_port}/v1",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            f"+head_server.port={head_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=PROJECT_ROOT,
        env=env,
    )
    log.close()
    stack = Stack(proc, head_port, sim_port, Path(log.name))
    try:
        deadline = time.monotonic() + timeout
        while "servers ready" not in _log_tail(stack.log_path, 10**7):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ng_run did not start (exit {proc.poll()}):\n{_log_tail(stack.log_path)}")
            time.sleep(0.1)
        instances = httpx.get(f"http://127.0.0.1:{head_port}/server_instances", timeout=10).json()
        stack.agent_url = next(i["url"] for i in instances if i["name"] == AGENT)
        stack.roles = server_pids(proc.pid)
        missing = set(ROLES.values()) - set(stack.roles)
        if missing:
            raise RuntimeError(f"ng_run children not found for {sorted(missing)}: {stack.roles}")
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def stop_stack(stack: Stack) -> None:
    """SIGINT to ng_run (it stops its servers); then SIGKILL any of its descendants left behind
    (the same pid with the same command line as before the stop, so never a reused pid)."""
    leftovers = {pid: _cmdline(pid) for pid in children_of(stack.proc.pid) | set(stack.roles.values())}
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)
        try:
            stack.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack.proc.kill()
            stack.proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_cmdline(p) == c and c for p, c in leftovers.items()):
        time.sleep(0.1)
    for pid, cmdline in leftovers.items():
        if cmdline and _cmdline(pid) == cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        stack.log_path.unlink()
    except OSError:
        pass


def load_rows() -> list[bytes]:
    return [line.encode() for line in WEATHER_ROWS.read_text().splitlines() if line.strip()]


class _RolloutWindow:
    """Warm-up, then a window of at most `rollouts` rollouts or `duration` s: which rollouts count.

    A rollout counts when it starts and ends inside the window."""

    def __init__(self, warmup: int, rollouts: int, duration: float, on_window: Callable[[str], None]) -> None:
        self.warmup, self.rollouts, self.duration = warmup, rollouts, duration
        self.on_window = on_window
        self.phase = "warmup"
        self.done = 0
        self.counted = 0
        self.errors = 0
        self.reward = 0.0
        self.latencies: list[float] = []
        self.start = self.end = 0.0
        self.first_error: str | None = None
        self.stop = asyncio.Event()

    def open(self) -> None:
        self.phase = "window"
        self.start = time.perf_counter()
        self.on_window("start")
        asyncio.get_running_loop().call_later(self.duration, self.close)

    def close(self) -> None:
        if self.phase != "window":
            return
        self.phase = "closed"
        self.end = time.perf_counter()
        self.on_window("end")
        self.stop.set()

    def record(self, phase0: str, t0: float, reward: Any) -> None:
        """A rollout that started in `phase0` at `t0` ended now; `reward` None when it failed."""
        t1 = time.perf_counter()
        self.done += 1
        if phase0 == "window" and self.phase == "window":
            self.counted += 1
            self.latencies.append((t1 - t0) * 1000)
            if isinstance(reward, (int, float)):
                self.reward += reward
            else:
                self.errors += 1
            if self.counted >= self.rollouts:
                self.close()
        elif self.phase == "warmup" and self.done >= self.warmup:
            self.open()

    def failed(self, what: str) -> None:
        if self.first_error is None:
            self.first_error = what

    def result(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

        return {
            "rollouts": self.counted,
            "seconds": self.end - self.start,
            "errors": self.errors,
            "mean_reward": self.reward / max(1, self.counted - self.errors),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "first_error": self.first_error,
        }


async def _one_rollout(session: aiohttp.ClientSession, url: str, body: bytes, window: _RolloutWindow) -> Any:
    """POST one row to /run: its reward, or None (the first failure is kept)."""
    try:
        async with session.post(
            url + "/run", data=body, headers={"content-type": "application/json"}
        ) as resp:
            payload = await resp.read()
            if resp.status == 200:
                return json.loads(payload).get("reward")
            window.failed(f"HTTP {resp.status}: {payload[:300]!r}")
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        window.failed(repr(exc))
    return None


async def drive(
    url: str,
    rows: list[bytes],
    concurrency: int,
    warmup: int,
    rollouts: int,
    duration: float,
    on_window: Callable[[str], None],
) -> dict[str, Any]:
    """`concurrency` workers POST rows to `url` until `warmup` + `rollouts` have completed or the
    window has lasted `duration` s. Only rollouts that start and end inside the window count."""
    window = _RolloutWindow(warmup, rollouts, duration, on_window)
    row_cycle = itertools.cycle(rows)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as session:

        async def worker() -> None:
            while not window.stop.is_set():
                t0, phase0 = time.perf_counter(), window.phase
                reward = await _one_rollout(session, url, next(row_cycle), window)
                window.record(phase0, t0, reward)

        if warmup <= 0:
            window.open()
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        # The in-flight tail finishes after the window (not counted) so no server sees an abort.
        await asyncio.wait_for(asyncio.gather(*workers), timeout=duration + 600)
    return window.result()


def measure(stack: Stack, concurrency: int, warmup: int, rollouts: int, duration: float) -> dict[str, Any]:
    marks: dict[str, dict[str, float]] = {}
    load = os.getloadavg()[0]

    def on_window(edge: str) -> None:
        marks[edge] = {**cpu_by_role(stack.proc.pid, stack.roles), "client": client_cpu()}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(
            drive(stack.agent_url, load_rows(), concurrency, warmup, rollouts, duration, on_window)
        )
    n = max(1, result["rollouts"])
    cpu_ms = {k: (marks["end"][k] - marks["start"][k]) * 1000 / n for k in marks["start"]}
    row: dict[str, Any] = {
        "scenario": "weather rollouts (simple_agent /run)",
        "concurrency": concurrency,
        "rollouts": result["rollouts"],
        "seconds": round(result["seconds"], 2),
        "rollouts_per_s": round(result["rollouts"] / result["seconds"], 1) if result["seconds"] else 0.0,
        "p50_ms": round(result["p50_ms"], 1),
        "p99_ms": round(result["p99_ms"], 1),
        "errors": result["errors"],
        "mean_reward": round(result["mean_reward"], 3),
        **{f"{role}_cpu_ms": round(cpu_ms[role], 3) for role in SERVER_ROLES},
        "servers_cpu_ms": round(sum(cpu_ms[role] for role in SERVER_ROLES), 3),
        "simulator_cpu_ms": round(cpu_ms["simulator"], 3),
        "ng_run_cpu_ms": round(cpu_ms["ng_run"], 3),
        "client_cpu_ms": round(cpu_ms["client"], 3),
        "loadavg_1m_before": round(load, 2),
    }
    if result["first_error"]:
        row["first_error"] = result["first_error"]
    return row


def bench(
    levels: list[int],
    warmup: int = WARMUP,
    rollouts: int = ROLLOUTS,
    duration: float = DURATION,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """One stack, each concurrency in turn; returns one row per concurrency."""
    stack = start_stack()
    rows: list[dict[str, Any]] = []
    try:
        for concurrency in levels:
            row = measure(stack, concurrency, warmup, rollouts, duration)
            rows.append(row)
            if echo:
                print(json.dumps(row), flush=True)
            if stack.proc.poll() is not None:
                raise RuntimeError(f"ng_run exited ({stack.proc.returncode}):\n{_log_tail(stack.log_path)}")
    finally:
        stop_stack(stack)
    return rows


def markdown_section(rows: list[dict[str, Any]], warmup: int, rollouts: int, duration: float) -> list[str]:
    lines = [
        "## End-to-end rollouts",
        "",
        "One `ng_run`: the bundled vLLM simulator as an instance (no added latency), the vllm_model adapter, "
        "simple_weather and simple_agent. One aiohttp client without a cookie jar posts the weather rows "
        f"(`resources_servers/simple_weather/data/example.jsonl`, repeated) to the agent's `/run`: {warmup} "
        f"rollouts of warm-up, then a window of {rollouts:,} rollouts or {duration:.0f}s, whichever ends first. "
        "A rollout is 2 model calls, 1 tool call and /seed_session + /verify. CPU: user+system time from "
        "/proc of each server process and its workers over the window, per rollout completed in it. "
        '"servers" is agent + resources + adapter; the simulator stands in for vLLM and is not summed; '
        "ng_run (head server, log pump) and the client are shown for completeness. Everything shares the "
        "machine's cores, so rollouts/s is bounded by the total of all columns, and falls when other work "
        "runs (load: the 1-minute load average just before the row); CPU per rollout moves much less.",
        "",
        "| concurrency | rollouts/s | p50 ms | p99 ms | rollouts | errors | agent CPU ms | resources CPU ms "
        "| adapter CPU ms | **servers CPU ms/rollout** | simulator CPU ms | ng_run CPU ms | client CPU ms | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['rollouts_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['rollouts']} | {r['errors']} | {r['agent_cpu_ms']:.2f} | {r['resources_cpu_ms']:.2f} | "
            f"{r['adapter_cpu_ms']:.2f} | **{r['servers_cpu_ms']:.2f}** | {r['simulator_cpu_ms']:.2f} | "
            f"{r['ng_run_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | {r['loadavg_1m_before']:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="end-to-end weather rollouts through ng_run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--warmup", type=int, default=WARMUP, help="rollouts before the window")
    parser.add_argument("--rollouts", type=int, default=ROLLOUTS, help="rollouts in the window (at most)")
    parser.add_argument("--duration", type=float, default=DURATION, help="window length in seconds (at most)")
    args = parser.parse_args()
    started = time.monotonic()
    rows = bench(args.concurrency, args.warmup, args.rollouts, args.duration)
    print("\n".join(markdown_section(rows, args.warmup, args.rollouts, args.duration)))
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
