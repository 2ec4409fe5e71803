"""Child server processes: start in their own process group, pump logs, stop without orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nemo_gym.config import PROJECT_ROOT, ServerInstance
from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR
from nemo_gym.server.listen_socket import LISTEN_FD_VAR
from nemo_gym.server.parent_watch import PARENT_PID_VAR


@dataclass(eq=False)
class ChildProcess:
    """One server of a run as a child process: how it is started, where its output goes, its state."""

    instance: ServerInstance
    config_file: Path
    log_dir: Path | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    # Set in the child's environment unless the parent's environment already sets them.
    extra_env: dict[str, str] = field(default_factory=dict)
    # The bound socket the child will serve on; it is the child's once the child exists.
    listener: socket.socket | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40), init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    status: str = field(default="not started", init=False)
    log_path: Path | None = field(default=None, init=False)
    _pump: threading.Thread | None = field(default=None, init=False, repr=False)
    _log_file: TextIO | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        env = dict(os.environ)
        for key, value in self.extra_env.items():
            env.setdefault(key, value)
        env[CONFIG_FILE_VAR] = str(self.config_file)
        env[INSTANCE_VAR] = self.instance.name
        env[PARENT_PID_VAR] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        pass_fds: tuple[int, ...] = ()
        if self.listener is not None:
            pass_fds = (self.listener.fileno(),)
            env[LISTEN_FD_VAR] = str(pass_fds[0])
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self.log_dir / f"{self.instance.name}.log"
            self._log_file = self.log_path.open("a", buffering=1)
        self.proc = subprocess.Popen(
            [sys.executable, str(self.instance.entrypoint)],
            cwd=str(self.instance.entrypoint.parent),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.release_listener()
        self.status = "starting"
        self._pump = threading.Thread(target=self._pump_output, name=f"log-{self.name}", daemon=True)
        self._pump.start()

    def release_listener(self) -> None:
        """Close this process's copy of the listening socket (the child, if any, keeps its own)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _pump_output(self) -> None:
        assert self.proc and self.proc.stdout
        prefix = f"[{self.name}] "
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if self._log_file:
                self._log_file.write(line + "\n")
            else:
                try:
                    self.out.write(prefix + line + "\n")
                    self.out.flush()
                except (ValueError, OSError):
                    pass

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 20) -> str:
        if self._pump:
            self._pump.join(timeout=0.5)
        return "\n".join(list(self.tail)[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        if self._pump:
            self._pump.join(timeout=1.0)
        if self._log_file:
            self._log_file.close()
            self._log_file = None


def stop_all(children: list[ChildProcess], grace: float = 10.0) -> None:
    """SIGINT every child's process group, wait up to `grace`, then SIGKILL what is left."""
    for child in children:
        child.signal_group(signal.SIGINT)
    deadline = time.monotonic() + grace
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.signal_group(signal.SIGKILL)
            child.proc.wait()
        # Grandchildren (e.g. uvicorn workers) share the group: make sure none survive.
        if child.proc is not None:
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        child.status = "stopped"
        child.close()
