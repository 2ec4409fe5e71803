"""Helpers for end-to-end tests: free ports, start processes, wait for health, clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from nemo_gym.config import PROJECT_ROOT, free_port


def wait_healthy(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(
                f"process exited with {proc.returncode} before {url} was healthy:\n{out[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_simulator(port: int, *args: str) -> subprocess.Popen:
    """A vLLM simulator process on `port`, returned once healthy (the caller stops it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.testing.vllm_simulator", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(PROJECT_ROOT),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@contextmanager
def simulator(*args: str, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A vLLM simulator process; yields (base_url ending in /v1, process)."""
    port = port or free_port()
    proc = start_simulator(port, *args)
    try:
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        stop_process(proc, signal.SIGTERM)


@contextmanager
def ng_run(
    *args: str, head_port: int | None = None, timeout: float = 60.0, module: str = "nemo_gym.cli.ng_run"
) -> Iterator[NgRun]:
    """`ng_run` (or another module that runs it, such as `gym env start`) as a subprocess, waited on
    until 'All N servers ready'. Output goes to a file (a pipe nobody reads would fill up and stall
    the servers' logging)."""
    head_port = head_port or free_port()
    env = dict(os.environ, NEMO_GYM_ENV_YAML="none", PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile(prefix="ng_run_", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, f"+head_server.port={head_port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(PROJECT_ROOT),
        env=env,
    )
    run = NgRun(head_port, proc, Path(log.name))
    try:
        run.wait_for("servers ready", timeout)
        yield run
    finally:
        stop_process(proc)
        log.close()
        os.unlink(log.name)


@dataclass
class NgRun:
    head_port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise RuntimeError(f"ng_run exited with {self.proc.returncode}:\n{self.output[-4000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"ng_run: no {text!r} after {timeout}s:\n{self.output[-4000:]}")

    def instances(self) -> list[dict]:
        return httpx.get(f"http://127.0.0.1:{self.head_port}/server_instances", timeout=5).json()

    def url_of(self, name: str) -> str:
        return next(i["url"] for i in self.instances() if i["name"] == name)


def process_parents() -> dict[int, int]:
    """`pid → parent pid` of every process now (one /proc snapshot, reusable across lookups)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def children_of(pid: int, parents: dict[int, int] | None = None) -> set[int]:
    """All descendants of `pid` (from /proc), to assert nothing is left behind."""
    parents = process_parents() if parents is None else parents
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def collect_rollouts_command(head_port: int, *args: str) -> list[str]:
    """The `ng_collect_rollouts` command line against the head server at `head_port`."""
    return [sys.executable, "-m", "nemo_gym.cli.ng_collect_rollouts", f"+head_server.port={head_port}", *args]


def hermetic_env() -> dict[str, str]:
    """The environment for child commands in tests: never read a developer's env.yaml."""
    return dict(os.environ, NEMO_GYM_ENV_YAML="none")


def wait_for_lines(path: Path, n: int, timeout: float, proc: subprocess.Popen | None = None) -> int:
    """Wait until `path` has at least `n` lines (or `proc` ends); return how many it has."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(path.read_bytes().splitlines()) if path.exists() else 0
        if count >= n or (proc is not None and proc.poll() is not None):
            break
        time.sleep(0.05)
    return count
