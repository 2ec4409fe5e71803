"""A standalone supervisor that agents upload into a sandbox and run their harness under.

    python3 -I process_supervisor.py --timeout 600 --receipt /run/x/cleanup.json \
        [--cleanup-timeout 10] [--stop-file /run/x/stop] -- harness args...

It runs the command in its own session, stops it at the deadline (SIGTERM, then SIGKILL after
`--cleanup-timeout`) or when asked (SIGTERM to the supervisor, or the stop file appearing), and
as a child subreaper it also kills and reaps every descendant, even ones that called `setsid`.
Only then does it write the receipt, atomically, so `"cleanup_confirmed": true` in the receipt
means nothing the command started is still running. Standard library only, and written for the
older Pythons a task image may carry: it is copied into sandboxes where nemo_gym is not installed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, TypedDict  # noqa: UP035 (runs on the task image's Python)

DEFAULT_CLEANUP_TIMEOUT = 10.0
PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.05


class CleanupReceipt(TypedDict):
    cleanup_confirmed: bool
    return_code: Optional[int]  # noqa: UP045
    error: Optional[str]  # noqa: UP045
    timed_out: bool


def exec_timeout(*, timeout: float, cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT) -> float:
    """The exec timeout a caller should give the supervisor's own command: the worker's budget
    plus the stop grace, the group kill, draining descendants, and writing the receipt."""
    return timeout + 3 * cleanup_timeout + 30


def _children() -> List[int]:  # noqa: UP006
    pids: List[int] = []  # noqa: UP006
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _reap_all(deadline_s: float) -> None:
    """SIGKILL and reap every remaining descendant (orphans are re-parented to us)."""
    deadline = time.monotonic() + deadline_s
    while True:
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return  # no children left at all
        if time.monotonic() > deadline:
            raise TimeoutError("descendants of the supervised command are still alive")
        time.sleep(POLL_S / 5)


def supervise(
    command: List[str],  # noqa: UP006
    *,
    timeout: float,
    cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT,
    stop_file: Optional[Path] = None,  # noqa: UP045
) -> CleanupReceipt:
    receipt: CleanupReceipt = {
        "cleanup_confirmed": False,
        "return_code": None,
        "error": None,
        "timed_out": False,
    }
    stop_requested = [False]
    worker: Optional[subprocess.Popen] = None  # noqa: UP045
    subreaper = False

    def request_stop(*_: object) -> None:
        stop_requested[0] = True

    def stopping() -> bool:
        return stop_requested[0] or (stop_file is not None and stop_file.exists())

    signal.signal(signal.SIGTERM, request_stop)
    try:
        if stopping():
            return receipt  # stopped before it started: nothing ran, and the finally block confirms it
        _become_subreaper()
        subreaper = True
        worker = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + timeout
        while worker.poll() is None and time.monotonic() < deadline and not stopping():
            time.sleep(POLL_S)
        if worker.poll() is None:
            receipt["timed_out"] = not stopping()
            worker.send_signal(signal.SIGTERM)  # a chance to save state before the hard stop
            try:
                worker.wait(timeout=cleanup_timeout)
            except subprocess.TimeoutExpired:
                pass
    except Exception as exc:
        receipt["error"] = str(exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _clean_up(worker, subreaper, cleanup_timeout, receipt)
    return receipt


def _become_subreaper() -> None:
    """Orphaned descendants of the command become our children, so none can outlive the cleanup."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError("the process supervisor needs Linux (child subreaper)")
    if os.getpgrp() != os.getpid():
        os.setsid()  # out of the exec's process group, so its kill cannot skip our cleanup
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot become a child subreaper")


def _clean_up(
    worker: Optional[subprocess.Popen],  # noqa: UP045
    subreaper: bool,
    cleanup_timeout: float,
    receipt: CleanupReceipt,
) -> None:
    """Kill the command's group and reap every descendant; only then is the cleanup confirmed."""
    try:
        if worker is not None:
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            receipt["return_code"] = worker.wait(timeout=cleanup_timeout)
        if subreaper:
            _reap_all(cleanup_timeout)
        receipt["cleanup_confirmed"] = True
    except Exception as exc:
        receipt["error"] = f"cleanup: {exc}"


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def main(argv: Optional[List[str]] = None) -> int:  # noqa: UP006, UP045
    parser = argparse.ArgumentParser(description="Run a command, then confirm all its processes are gone.")
    parser.add_argument("--timeout", type=_seconds, required=True)
    parser.add_argument("--cleanup-timeout", type=_seconds, default=DEFAULT_CLEANUP_TIMEOUT)
    parser.add_argument("--receipt", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to supervise after --")
    receipt = supervise(
        command, timeout=args.timeout, cleanup_timeout=args.cleanup_timeout, stop_file=args.stop_file
    )
    partial = args.receipt.with_name(args.receipt.name + ".partial")
    partial.write_text(json.dumps(receipt))
    partial.replace(args.receipt)
    return 0 if receipt["cleanup_confirmed"] and receipt["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
