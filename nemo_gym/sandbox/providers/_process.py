"""Run one sandbox command as a host process group with limits, and never lose track of it.

Every command starts in a new session (its own process group) through `_launch.py`, which
lowers its resource limits, pins its CPUs and arms a parent-death signal before exec. The group
is killed when the command times out or its caller is cancelled, when the sandbox that ran it
closes (processes a command left in the background), and when this interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("_launch.py")
# How long to wait for a killed group's leader to be reaped; bounded so a process stuck in the
# kernel cannot hang the caller.
REAP_WAIT_S = 5.0
STDIN_CHUNK = 1 << 16

# Process groups this interpreter started that may still have members.
_LIVE_GROUPS: set[int] = set()


@dataclass(frozen=True)
class Limits:
    """Per-process limits every process of a command inherits (setrlimit semantics: each
    process gets its own allowance, so a command that forks may use several)."""

    cpu_seconds: float | None = None  # RLIMIT_CPU: SIGXCPU at the limit, SIGKILL a second later
    memory_bytes: int | None = None  # RLIMIT_DATA: heap and private writable mappings
    file_size_bytes: int | None = None  # RLIMIT_FSIZE: the largest file a process may write
    open_files: int | None = None  # RLIMIT_NOFILE
    cpus: tuple[int, ...] | None = None  # CPU affinity
    processes: int | None = None  # RLIMIT_NPROC: counted per host user, across all its processes
    user: tuple[int, int] | None = None  # (uid, gid) to run as; needs a root server

    def launcher_spec(self) -> dict:
        rlimits: dict[str, list[int]] = {}
        if self.cpu_seconds is not None:
            soft = max(1, math.ceil(self.cpu_seconds))
            rlimits["RLIMIT_CPU"] = [soft, soft + 1]
        for name, value in (
            ("RLIMIT_DATA", self.memory_bytes),
            ("RLIMIT_FSIZE", self.file_size_bytes),
            ("RLIMIT_NOFILE", self.open_files),
            ("RLIMIT_NPROC", self.processes),
        ):
            if value is not None:
                rlimits[name] = [int(value), int(value)]
        return {
            "rlimits": rlimits,
            "cpus": list(self.cpus) if self.cpus else None,
            "user": list(self.user) if self.user else None,
            "parent": os.getpid(),
        }


@dataclass
class Completed:
    stdout: bytes
    stderr: bytes
    return_code: int  # the command's status; 128+N when signal N killed it
    timed_out: bool = False
    dropped_bytes: int = 0  # output beyond max_output_bytes, read and discarded


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _LIVE_GROUPS.discard(pgid)


def kill_groups(pgids: Iterable[int]) -> None:
    for pgid in list(pgids):
        kill_group(pgid)


@atexit.register
def _kill_all_at_exit() -> None:
    kill_groups(_LIVE_GROUPS)


async def _read_capped(
    stream: asyncio.StreamReader | None, into: bytearray, cap: int, dropped: list[int]
) -> None:
    if stream is None:
        return
    while chunk := await stream.read(STDIN_CHUNK):
        room = cap - len(into)
        if room > 0:
            into.extend(chunk[:room])
        if len(chunk) > room:
            dropped[0] += len(chunk) - max(room, 0)


async def _feed(stream: asyncio.StreamWriter | None, source: Path | None) -> None:
    if stream is None or source is None:
        return
    try:
        with source.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, STDIN_CHUNK):
                stream.write(chunk)
                await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command stopped reading; its exit status tells why
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stream.close()


def _status(return_code: int | None) -> int:
    if return_code is None:
        return -1
    return 128 - return_code if return_code < 0 else return_code


async def run(
    argv: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    limits: Limits,
    timeout_s: float | None,
    groups: set[int],
    stdin_path: Path | None = None,
    stdout_path: Path | None = None,
    max_output_bytes: int = 64 << 20,
) -> Completed:
    """Run `argv` to completion or `timeout_s`. `groups` is the caller's set of groups to kill
    at close: the command's group stays there if members outlive the command (background
    services), and leaves it once empty. With `stdout_path`, stdout goes straight to that file."""
    with contextlib.ExitStack() as stack:
        stdout_target: int | object = asyncio.subprocess.PIPE
        if stdout_path is not None:
            stdout_target = stack.enter_context(stdout_path.open("wb"))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            str(LAUNCHER),
            json.dumps(limits.launcher_spec()),
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin_path is not None else asyncio.subprocess.DEVNULL,
            stdout=stdout_target,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    pgid = process.pid
    _LIVE_GROUPS.add(pgid)
    groups.add(pgid)
    stdout, stderr, dropped = bytearray(), bytearray(), [0]
    tasks = [
        asyncio.ensure_future(_feed(process.stdin, stdin_path)),
        asyncio.ensure_future(_read_capped(process.stdout, stdout, max_output_bytes, dropped)),
        asyncio.ensure_future(_read_capped(process.stderr, stderr, max_output_bytes, dropped)),
    ]
    timed_out = False
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*tasks)
            await process.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if timed_out or process.returncode is None:  # timed out, or the caller was cancelled
            kill_group(pgid)
            groups.discard(pgid)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), REAP_WAIT_S)
    if not group_alive(pgid):
        _LIVE_GROUPS.discard(pgid)
        groups.discard(pgid)
    return Completed(bytes(stdout), bytes(stderr), _status(process.returncode), timed_out, dropped[0])
