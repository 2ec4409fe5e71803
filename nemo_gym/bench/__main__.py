"""`python -m nemo_gym.bench` (`make bench`): the adapter's cost per request, on 127.0.0.1 only.

Starts a canned vLLM-shaped upstream, then adapters exactly as ng_run starts them (one per
config: plain, token mode with /tokenize, token mode with inline ids), drives each scenario at
several concurrencies with the bundled load generator, and reads each adapter's own CPU time
from /proc. Then the end-to-end row (`nemo_gym/bench/rollouts.py`): weather rollouts through a
whole ng_run stack against the bundled simulator, and the token-mode rows at long contexts
(`nemo_gym/bench/token_context.py`). Prints one JSON line per scenario and writes
docs/benchmarks.md (`--scenarios` picks a subset, `--output` another file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.bench import rollouts as e2e
from nemo_gym.bench import token_context, trainer_api
from nemo_gym.bench.adapter_process import adapter_launch
from nemo_gym.bench.loadgen import run, run_load
from nemo_gym.bench.scenarios import (
    ADAPTER_SCENARIOS,
    CHAT_BODY,
    DEFAULT_SCENARIOS,
    LONG_RESPONSES_BODY,
    LONG_SCENARIOS,
    RESPONSES_BODY,
)
from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import stop_process, wait_healthy

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live threads (children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Adapter:
    name: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_adapter(name: str, upstream: str, overrides: dict[str, Any], workers: int = 1) -> Adapter:
    launch = adapter_launch(name, upstream, overrides, workers)
    proc = subprocess.Popen(
        launch.command, env=launch.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=launch.cwd
    )
    wait_healthy(f"{launch.url}/health", proc=proc)
    return Adapter(name, launch.port, proc)


def tree_cpu(pid: int) -> float:
    from nemo_gym.testing.processes import children_of

    total = cpu_seconds(pid)
    for child in children_of(pid):
        try:
            total += cpu_seconds(child)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def measure(url: str, body: bytes, concurrency: int, duration: float, pid: int | None) -> dict[str, Any]:
    marks: dict[str, float] = {}

    def on_window(edge: str) -> None:
        if pid:
            marks[edge] = tree_cpu(pid)

    result = run(run_load(url, body, concurrency, duration, on_window=on_window))
    out: dict[str, Any] = {
        "rps": round(result.rps, 1),
        "p50_ms": round(result.percentile(0.50), 3),
        "p99_ms": round(result.percentile(0.99), 3),
        "errors": result.errors,
        "requests": result.requests,
        "ttfb_p50_ms": round(result.percentile(0.50, result.first_byte_ms), 3),
    }
    if pid and result.requests and "end" in marks:
        # CPU over the measured window only (warmup connection setup excluded), per request
        # completed in that window.
        out["adapter_cpu_ms_per_req"] = round((marks["end"] - marks["start"]) * 1000 / result.requests, 4)
    return out


@dataclass(frozen=True, slots=True)
class Load:
    """One scenario of the load rows: where to send what, whose CPU to read, at which concurrencies."""

    label: str
    url: str
    body: bytes
    pid: int | None
    levels: list[int]


def run_loads(plan: list[Load], duration: float) -> list[dict[str, Any]]:
    """Each scenario at each of its concurrencies, one printed JSON line per row."""
    rows: list[dict[str, Any]] = []
    for load in plan:
        for concurrency in load.levels:
            row = {
                "scenario": load.label,
                "concurrency": concurrency,
                **measure(load.url, load.body, concurrency, duration, load.pid),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


STREAM_TOKEN_MS = 2.0  # the simulator's time per token in the streaming rows


def measure_streaming(levels: list[int], duration: float) -> list[dict[str, Any]]:
    """Streamed answers against the simulator streaming one token per STREAM_TOKEN_MS: time to
    the first byte direct to it and through the adapter, and the adapter's CPU per stream."""
    from nemo_gym.testing.processes import start_simulator

    sim_port = free_port()
    sim = start_simulator(sim_port, "--per-token-ms", str(STREAM_TOKEN_MS), "--model", "bench-model")
    adapter = start_adapter("bench_stream", f"http://127.0.0.1:{sim_port}/v1", {})
    chat = orjson.dumps({**orjson.loads(CHAT_BODY), "stream": True})
    responses = orjson.dumps({**orjson.loads(RESPONSES_BODY), "stream": True})
    pid = adapter.proc.pid
    try:
        return run_loads(
            [
                Load(
                    "stream: chat direct to the simulator",
                    f"http://127.0.0.1:{sim_port}/v1/chat/completions",
                    chat,
                    None,
                    levels,
                ),
                Load(
                    "stream: chat through the adapter",
                    adapter.url + "/v1/chat/completions",
                    chat,
                    pid,
                    levels,
                ),
                Load(
                    "stream: responses through the adapter",
                    adapter.url + "/v1/responses",
                    responses,
                    pid,
                    levels,
                ),
            ],
            duration,
        )
    finally:
        stop_process(adapter.proc)
        stop_process(sim)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_sessions(url: str, body: bytes, pid: int, sessions: int, concurrency: int = 64) -> dict[str, Any]:
    """RSS while `sessions` distinct sessions (no cookie sent back) pass through the adapter."""
    run(run_load(url, body, concurrency, duration=60, warmup=0, max_requests=20_000, sticky=False))
    warm = rss_mb(pid)
    result = run(
        run_load(url, body, concurrency, duration=120, warmup=0, max_requests=sessions, sticky=False)
    )
    after = rss_mb(pid)
    return {
        "sessions": 20_000 + result.requests,
        "errors": result.errors,
        "rss_after_20k_mb": round(warm, 1),
        "rss_after_all_mb": round(after, 1),
        "rss_growth_mb": round(after - warm, 1),
        "rps": round(result.rps, 1),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="benchmark the vLLM adapter")
    parser.add_argument("--duration", type=float, default=2.5, help="measured seconds per scenario")
    parser.add_argument("--concurrency", default="1,32,256,1024")
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help="scenarios to run; NAME_aiohttp is NAME with `upstream_client: aiohttp` instead of the "
        "lean client (responses, chat, token_tokenize), to see what the lean client still saves",
    )
    parser.add_argument(
        "--sessions", type=int, default=200_000, help="distinct sessions for the memory scenario"
    )
    parser.add_argument(
        "--rollout-concurrency", default="32,256", help="concurrencies of the end-to-end rollouts row"
    )
    parser.add_argument("--output", default=str(PROJECT_ROOT / "docs" / "benchmarks.md"))
    return parser.parse_args()


class Adapters:
    """The adapters the load rows use, started on first use (one per config key) and stopped together."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.by_key: dict[str, Adapter] = {}
        self.started: list[Adapter] = []

    def get(self, key: str, overrides: dict[str, Any]) -> Adapter:
        if key not in self.by_key:
            self.by_key[key] = self.start(f"bench_{key}", overrides)
        return self.by_key[key]

    def start(self, name: str, overrides: dict[str, Any], workers: int = 1) -> Adapter:
        adapter = start_adapter(name, self.upstream, overrides, workers=workers)
        self.started.append(adapter)
        return adapter

    def stop(self) -> None:
        for adapter in self.started:
            stop_process(adapter.proc)


def load_plan(wanted: list[str], levels: list[int], adapters: Adapters) -> list[Load]:
    """The load rows `wanted` asks for, starting the adapters they need."""
    plan: list[Load] = []
    upstream = adapters.upstream
    if "direct" in wanted:
        plan.append(
            Load("direct upstream (loadgen ceiling)", f"{upstream}/chat/completions", CHAT_BODY, None, levels)
        )
    for scenario, (key, overrides, path, body) in ADAPTER_SCENARIOS.items():
        if scenario in wanted:
            adapter = adapters.get(key, overrides)
            plan.append(Load(scenario, adapter.url + path, body, adapter.proc.pid, levels))
    if "long" in wanted:
        short_levels = [c for c in levels if c <= 32]
        for key, overrides, label in LONG_SCENARIOS:
            adapter = adapters.get(key, overrides)
            plan.append(
                Load(
                    label, adapter.url + "/v1/responses", LONG_RESPONSES_BODY, adapter.proc.pid, short_levels
                )
            )
    if "workers2" in wanted:
        w2 = adapters.start("bench_workers2", {"routing": "hash"}, workers=2)
        label = "responses, 2 workers (hash routing)"
        plan.append(Load(label, w2.url + "/v1/responses", RESPONSES_BODY, w2.proc.pid, levels))
    return plan


@dataclass
class Results:
    """What a run measured, for docs/benchmarks.md."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    rollout_rows: list[dict[str, Any]] = field(default_factory=list)
    context_rows: list[dict[str, Any]] = field(default_factory=list)
    trainer_row: dict[str, Any] | None = None
    failed: bool = False


def bench_adapter(args: argparse.Namespace, wanted: list[str], levels: list[int], results: Results) -> None:
    """The load rows against the canned upstream, then streaming and memory; every process stopped after."""
    up_port = free_port()
    upstream_proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.bench.fast_upstream", "--port", str(up_port)], cwd=PROJECT_ROOT
    )
    adapters = Adapters(f"http://127.0.0.1:{up_port}/v1")
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}/health", proc=upstream_proc)
        results.rows += run_loads(load_plan(wanted, levels, adapters), args.duration)
        if "streaming" in wanted:
            results.rows += measure_streaming([c for c in levels if c <= 32], args.duration)
        if "sessions" in wanted:
            mem = adapters.start("bench_sessions", {})
            url = mem.url + "/v1/responses"
            results.memory = {
                "scenario": "memory: distinct sessions",
                **measure_sessions(url, RESPONSES_BODY, mem.proc.pid, args.sessions - 20_000),
            }
            print(json.dumps(results.memory), flush=True)
    finally:
        adapters.stop()
        stop_process(upstream_proc)


def bench_stacks(args: argparse.Namespace, wanted: list[str], results: Results) -> None:
    """The rows that start stacks of their own (after the load rows' processes are stopped)."""
    if "token_context" in wanted:
        results.context_rows = token_context.bench(start_adapter)
    if "rollouts" in wanted:
        try:
            results.rollout_rows = e2e.bench([int(c) for c in args.rollout_concurrency.split(",")])
        except Exception as exc:  # keep the rows above: write them, then fail
            print(f"error: end-to-end rollouts: {exc}", file=sys.stderr, flush=True)
            results.failed = True
    if "trainer_api" in wanted:
        try:
            results.trainer_row = trainer_api.run_subprocess()
            print(json.dumps(results.trainer_row), flush=True)
        except Exception as exc:
            print(f"error: trainer API rollouts: {exc}", file=sys.stderr, flush=True)
            results.failed = True


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    wanted = args.scenarios.split(",")
    started = time.monotonic()
    results = Results()
    bench_adapter(args, wanted, levels, results)
    bench_stacks(args, wanted, results)
    write_markdown(Path(args.output), results, time.monotonic() - started, args.duration)
    print(f"wrote {args.output} ({time.monotonic() - started:.0f}s)")
    if results.failed:
        raise SystemExit(1)


def write_markdown(path: Path, results: Results, elapsed: float, duration: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(f"{p} {version(p)}" for p in ("fastapi", "uvicorn", "httpx", "aiohttp", "orjson"))
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}; {versions}.",
        f"Each row: {duration}s measured after 0.5s warmup, all on 127.0.0.1. Upstream: the canned vLLM-shaped responder "
        "(`nemo_gym/bench/fast_upstream.py`), so the adapter is the cost being measured. Load: the bundled generator "
        "(`nemo_gym/bench/loadgen.py`: one keep-alive connection and session cookie per worker, httptools on uvloop); the "
        '"direct upstream" rows are its ceiling. Adapter CPU is the adapter process\'s own user+system time (workers '
        "included) divided by requests served.",
        "",
        "| scenario | concurrency | req/s | p50 ms | p99 ms | first byte p50 ms | errors | adapter CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows, memory = results.rows, results.memory
    if not rows:  # a subset without the load rows (--scenarios)
        lines = lines[:3]
    for r in rows:
        cpu = r.get("adapter_cpu_ms_per_req")
        lines.append(
            f"| {r['scenario']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r.get('ttfb_p50_ms', float('nan')):.2f} | {r['errors']} | "
            f"{'' if cpu is None else f'{cpu:.3f}'} |"
        )
    if memory:
        lines += [
            "",
            f"Memory: {memory['sessions']:,} distinct sessions (no cookie sent back) through one adapter at concurrency 64 "
            f"({memory['rps']:.0f} req/s, {memory['errors']} errors): RSS {memory['rss_after_20k_mb']} MB after the first 20,000, "
            f"{memory['rss_after_all_mb']} MB at the end, growth {memory['rss_growth_mb']} MB (session table bounded by max_sessions).",
        ]
    if results.rollout_rows:
        lines += ["", *e2e.markdown_section(results.rollout_rows, e2e.WARMUP, e2e.ROLLOUTS, e2e.DURATION)]
    if results.context_rows:
        lines += ["", *token_context.markdown_section(results.context_rows)]
    if results.trainer_row:
        lines += ["", *trainer_api.markdown_section(results.trainer_row)]
    lines += ["", f"Whole run: {elapsed:.0f}s.", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
