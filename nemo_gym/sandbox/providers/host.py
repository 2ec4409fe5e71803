"""What the two host-process providers (`local`, `isolated`) share.

A sandbox is a directory under `workspace_root` plus a small JSON state file beside it, so any
process on the same host that builds the same provider config can `connect()` to it by id. Each
command is a process group started through `_process.run` with the sandbox's limits:

- `resources.cpu` pins the sandbox to that many CPUs (rounded up; chosen round-robin across
  sandboxes), so a busy sandbox cannot take the whole machine;
- `resources.memory_mib` caps each process's data segment (RLIMIT_DATA: heap and private
  writable mappings; an allocation beyond it fails with ENOMEM / MemoryError);
- `resources.disk_gib` caps the size of any single file a process writes (RLIMIT_FSIZE);
- the provider's `cpu_time_limit_s` caps CPU seconds per process (RLIMIT_CPU), and every command
  has a wall-clock timeout after which its whole process group is killed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Unpack

from nemo_gym.sandbox.providers import _process
from nemo_gym.sandbox.providers.base import (
    SANDBOX_RUNTIME_RETURN_CODE,
    ExecOptions,
    SandboxCreateError,
    SandboxExecResult,
    SandboxHandle,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "nemo_gym_sandboxes"


@dataclass
class HostSandbox:
    """A host sandbox's state: what `create` decided, persisted so `connect` can rebuild it."""

    sandbox_id: str
    directory: str  # the provider-owned directory of this sandbox
    workdir: str  # where commands start (a host path for `local`, a sandbox path for `isolated`)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    cpus: list[int] | None = None
    memory_bytes: int | None = None
    file_size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Process groups this process started for the sandbox; not persisted.
    groups: set[int] = field(default_factory=set, repr=False, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("groups")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> HostSandbox:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "groups"})


class HostProvider(ABC):
    """Shared machinery; subclasses say how a command line becomes a process (`_argv`), which
    environment it gets (`_base_env`) and how sandbox paths map to host paths."""

    name = "host"
    _id_prefix = "host"

    def __init__(
        self,
        workspace_root: str | None = None,
        shell: str = "/bin/bash",
        default_timeout_s: float = 180.0,
        concurrency: int = 8,
        *,
        cpu_time_limit_s: float | None = None,
        max_output_bytes: int = 64 << 20,
        open_files: int | None = None,
        **options: Any,
    ) -> None:
        if default_timeout_s is not None and default_timeout_s <= 0:
            raise ValueError(f"{self.name}.default_timeout_s must be > 0, got {default_timeout_s}")
        if concurrency < 1:
            raise ValueError(f"{self.name}.concurrency must be >= 1, got {concurrency}")
        if cpu_time_limit_s is not None and cpu_time_limit_s <= 0:
            raise ValueError(f"{self.name}.cpu_time_limit_s must be > 0, got {cpu_time_limit_s}")
        if max_output_bytes < 1:
            raise ValueError(f"{self.name}.max_output_bytes must be >= 1, got {max_output_bytes}")
        root = Path(workspace_root).expanduser() if workspace_root else DEFAULT_ROOT / self.name
        self._root = root.resolve()
        self._shell = shell
        self._default_timeout_s = default_timeout_s
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._cpu_time_limit_s = cpu_time_limit_s
        self._max_output_bytes = max_output_bytes
        self._open_files = open_files
        self._cpu_turn = itertools.count()
        self._id_pattern = re.compile(rf"^{re.escape(self._id_prefix)}-[0-9a-f]{{12,32}}$")
        self._configure(**options)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A provider's signature is the shared keys, then its own (`_configure`'s): what the
        registry checks a config against, with a did-you-mean."""
        super().__init_subclass__(**kwargs)
        shared = list(inspect.signature(HostProvider.__init__).parameters.values())[1:-1]
        own = list(inspect.signature(cls._configure).parameters.values())[1:]
        cls.__signature__ = inspect.Signature([*shared, *own])  # type: ignore[attr-defined]

    def _configure(self) -> None:  # noqa: B027 (a hook: by default a provider has no keys of its own)
        """A subclass's own keys (keyword-only), checked and kept after the shared ones."""

    # -- subclass hooks ------------------------------------------------------------------------

    @abstractmethod
    def _argv(self, box: HostSandbox, command: str, cwd: str, user: str | int | None) -> list[str]:
        """The host command line that runs `command` for this sandbox."""

    @abstractmethod
    def _base_env(self) -> dict[str, str]:
        """The environment every command starts from (the spec's env and the call's go on top)."""

    @abstractmethod
    def _host_cwd(self, box: HostSandbox, cwd: str) -> str | None:
        """The host directory the launcher starts in."""

    @abstractmethod
    async def _prepare(self, box: HostSandbox, spec: SandboxSpec) -> None:
        """Create the sandbox's directories (and set `box.workdir`)."""

    # -- lifecycle -----------------------------------------------------------------------------

    def _state_path(self, sandbox_id: str) -> Path:
        return self._root / f"{sandbox_id}.json"

    def _limits(self, box: HostSandbox) -> _process.Limits:
        return _process.Limits(
            cpu_seconds=self._cpu_time_limit_s,
            memory_bytes=box.memory_bytes,
            file_size_bytes=box.file_size_bytes,
            open_files=self._open_files,
            cpus=tuple(box.cpus) if box.cpus else None,
        )

    def _pick_cpus(self, cpu: float | None) -> list[int] | None:
        if cpu is None:
            return None
        if cpu <= 0:
            raise SandboxCreateError(f"resources.cpu must be > 0, got {cpu}")
        available = sorted(os.sched_getaffinity(0))
        want = min(len(available), max(1, math.ceil(cpu)))
        if want == len(available):
            return None
        start = next(self._cpu_turn) * want
        return sorted({available[(start + i) % len(available)] for i in range(want)})

    def _apply_resources(self, box: HostSandbox, resources: SandboxResources) -> None:
        box.cpus = self._pick_cpus(resources.cpu)
        if resources.memory_mib is not None:
            if resources.memory_mib <= 0:
                raise SandboxCreateError(f"resources.memory_mib must be > 0, got {resources.memory_mib}")
            box.memory_bytes = resources.memory_mib << 20
        if resources.disk_gib is not None:
            if resources.disk_gib <= 0:
                raise SandboxCreateError(f"resources.disk_gib must be > 0, got {resources.disk_gib}")
            box.file_size_bytes = resources.disk_gib << 30
        if resources.gpu:
            LOGGER.warning("sandbox provider %r does not manage GPUs; resources.gpu is ignored", self.name)

    def _new_box(self, spec: SandboxSpec) -> HostSandbox:
        sandbox_id = f"{self._id_prefix}-{uuid.uuid4().hex[:16]}"
        return HostSandbox(
            sandbox_id=sandbox_id,
            directory=str(self._root / sandbox_id),
            workdir="",
            env={str(k): str(v) for k, v in spec.env.items()},
            ports=list(spec.ports),
        )

    def _write_state(self, box: HostSandbox) -> None:
        """Owner-only: the state holds the spec's env, which may carry credentials."""
        fd = os.open(self._state_path(box.sandbox_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(box.to_json())

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        box = self._new_box(spec)
        self._apply_resources(box, spec.resources)
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        handle = SandboxHandle(sandbox_id=box.sandbox_id, provider_name=self.name, raw=box)
        try:
            await self._prepare(box, spec)
            await asyncio.to_thread(self._write_state, box)
            if spec.entrypoint:
                await self._start_entrypoint(box, list(spec.entrypoint))
        except BaseException:
            await self.close(handle)  # nothing of a sandbox that never started is left behind
            raise
        return handle

    @abstractmethod
    def _entrypoint_log(self, box: HostSandbox) -> str:
        """Where the spec's entrypoint writes its output (a path the command can write)."""

    async def _start_entrypoint(self, box: HostSandbox, entrypoint: list[str]) -> None:
        """Run the spec's entrypoint as the sandbox's background service (killed at close)."""
        log = shlex.quote(self._entrypoint_log(box))
        command = f"nohup {shlex.join(entrypoint)} >{log} 2>&1 &"
        result = await self.exec(SandboxHandle(box.sandbox_id, self.name, box), command, timeout_s=30)
        if result.return_code != 0:
            raise SandboxCreateError(f"the sandbox entrypoint did not start: {result.stderr}")

    async def serialize_handle(self, handle: SandboxHandle, *, scope: str | None = None) -> dict[str, Any]:
        return {"sandbox_id": handle.sandbox_id}

    async def connect(self, descriptor: Any) -> SandboxHandle:
        """A handle on a sandbox created by another process on this host with the same
        `workspace_root`, from its id."""
        sandbox_id = str(descriptor.get("sandbox_id") or "")
        if not self._id_pattern.match(sandbox_id):
            raise SandboxCreateError(f"{sandbox_id!r} is not a {self.name!r} sandbox id")
        state = self._state_path(sandbox_id)
        try:
            box = HostSandbox.from_json(await asyncio.to_thread(state.read_text))
        except FileNotFoundError as exc:
            raise SandboxCreateError(
                f"no {self.name!r} sandbox {sandbox_id!r} under {self._root} (stopped, or created with another "
                "workspace_root)"
            ) from exc
        return SandboxHandle(sandbox_id=sandbox_id, provider_name=self.name, raw=box)

    async def status(self, handle: SandboxHandle) -> SandboxStatus:
        box: HostSandbox = handle.raw
        alive = await asyncio.to_thread(self._alive, box)
        return SandboxStatus.RUNNING if alive else SandboxStatus.STOPPED

    def _alive(self, box: HostSandbox) -> bool:
        return self._state_path(box.sandbox_id).exists() and Path(box.directory).exists()

    async def close(self, handle: SandboxHandle) -> None:
        box: HostSandbox = handle.raw
        _process.kill_groups(box.groups)
        box.groups.clear()
        await asyncio.to_thread(self._state_path(box.sandbox_id).unlink, missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, box.directory, True)

    async def aclose(self) -> None:
        return None

    # -- commands ------------------------------------------------------------------------------

    def _gate(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        return self._semaphore

    async def _run(
        self,
        box: HostSandbox,
        command: str,
        *,
        cwd: str | None,
        env: dict[str, str] | None,
        timeout_s: float | None,
        user: str | int | None,
        stdin_path: Path | None = None,
        stdout_path: Path | None = None,
    ) -> _process.Completed:
        inner_cwd = cwd if cwd is not None else box.workdir
        merged_env = {**self._base_env(), **box.env, **{str(k): str(v) for k, v in (env or {}).items()}}
        async with self._gate():
            return await _process.run(
                self._argv(box, command, inner_cwd, user),
                cwd=self._host_cwd(box, inner_cwd),
                env=merged_env,
                limits=self._limits(box),
                timeout_s=timeout_s,
                groups=box.groups,
                stdin_path=stdin_path,
                stdout_path=stdout_path,
                max_output_bytes=self._max_output_bytes,
            )

    async def exec(
        self, handle: SandboxHandle, command: str, **options: Unpack[ExecOptions]
    ) -> SandboxExecResult:
        """Run `command` with the provider's shell; a timeout kills the command's process group."""
        box: HostSandbox = handle.raw
        timeout = options.get("timeout_s")
        timeout = timeout if timeout is not None else self._default_timeout_s
        done = await self._run(
            box,
            command,
            cwd=options.get("cwd"),
            env=options.get("env"),
            timeout_s=timeout,
            user=options.get("user"),
        )
        stdout = done.stdout.decode(errors="replace")
        stderr = done.stderr.decode(errors="replace")
        if done.dropped_bytes:
            stderr += (
                f"\n[sandbox: {done.dropped_bytes} bytes of output beyond max_output_bytes were dropped]"
            )
        if done.timed_out:
            stderr += f"\n[sandbox: command timed out after {timeout:g}s; its process group was killed]"
            return SandboxExecResult(stdout, stderr, SANDBOX_RUNTIME_RETURN_CODE, "timeout")
        return SandboxExecResult(stdout, stderr, done.return_code, None)
