"""The contract between `AsyncSandbox` and the backends that run its commands.

Everything here is provider-neutral: requests (`SandboxSpec`, `SandboxResources`), results
(`SandboxExecResult`, `SandboxEndpoint`), the opaque `SandboxHandle`, the errors callers catch,
and the `Protocol`s a backend implements. Optional capabilities are separate runtime-checkable
protocols so callers can ask `isinstance(provider, SupportsSandboxEndpoint)` before relying on one.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack, runtime_checkable
from urllib.parse import urlsplit

from nemo_gym.exceptions import NemoGymError

# Exit status a provider reports when the sandbox runtime, not the command, failed (the value
# `docker exec` and the shells use for "could not run").
SANDBOX_RUNTIME_RETURN_CODE = 125


def did_you_mean(word: str, known: list[str] | tuple[str, ...] | set[str]) -> str:
    """`"; did you mean 'x'?"` for the closest known word, else the list of known words."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known: {', '.join(sorted(known)) or '(none)'}"


class SandboxStatus(StrEnum):
    """Where a sandbox is in its life, in terms every backend can map onto."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SandboxEndpoint:
    """How a caller reaches a service listening inside a sandbox: an absolute URL plus any
    headers the backend's gateway needs (so callers never see the backend's handle)."""

    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = self.endpoint.strip() if isinstance(self.endpoint, str) else ""
        parts = urlsplit(url)
        if not url or not parts.scheme or not parts.netloc:
            raise ValueError(f"a sandbox endpoint must be an absolute URL, got {self.endpoint!r}")
        if not isinstance(self.headers, Mapping):
            raise TypeError("sandbox endpoint headers must be a mapping of strings")
        object.__setattr__(self, "endpoint", url)
        object.__setattr__(self, "headers", {str(k): str(v) for k, v in self.headers.items()})


def _optional(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


@dataclass(frozen=True)
class SandboxResources:
    """What a sandbox may use. Each provider documents how it enforces each field."""

    cpu: float | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    gpu: int | None = None
    gpu_type: str | None = None

    @classmethod
    def from_mapping(cls, resources: Mapping[str, Any] | None) -> SandboxResources:
        if resources is None:
            return cls()
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in resources if k not in known)
        if unknown:
            raise ValueError(f"unknown sandbox resource key {unknown[0]!r}{did_you_mean(unknown[0], known)}")
        return cls(
            cpu=_optional(resources.get("cpu"), float),
            memory_mib=_optional(resources.get("memory_mib"), int),
            disk_gib=_optional(resources.get("disk_gib"), int),
            gpu=_optional(resources.get("gpu"), int),
            gpu_type=_optional(resources.get("gpu_type"), str),
        )


def _port(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError(f"not a TCP port: {raw!r}")
    try:
        port = int(raw)
    except ValueError as exc:
        raise ValueError(f"not a TCP port: {raw!r}") from exc
    if not 1 <= port <= 65535:
        raise ValueError(f"a sandbox TCP port must be in 1..65535, got {port}")
    return port


@dataclass(frozen=True)
class SandboxSpec:
    """What to create. `files` maps a path inside the sandbox to its text content, written
    after the sandbox is up; `ports` are the service ports `endpoint()` may resolve."""

    image: str | None = None
    ttl_s: int | float | None = None
    ready_timeout_s: int | float | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    resources: SandboxResources | Mapping[str, Any] = field(default_factory=SandboxResources)
    entrypoint: list[str] | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    ports: tuple[int, ...] | list[int] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.resources, SandboxResources):
            object.__setattr__(self, "resources", SandboxResources.from_mapping(self.resources))
        if not isinstance(self.ports, (list, tuple)):
            raise TypeError("SandboxSpec.ports must be a list or tuple of TCP ports")
        ports: list[int] = []
        for raw in self.ports:
            port = _port(raw)
            if port in ports:
                raise ValueError(f"sandbox TCP port {port} is listed twice")
            ports.append(port)
        object.__setattr__(self, "ports", tuple(ports))


@dataclass
class SandboxHandle:
    """A created sandbox. `raw` belongs to the provider that made it; pass the handle back to
    that provider rather than reading `raw`."""

    sandbox_id: str
    provider_name: str
    raw: Any


@dataclass(frozen=True)
class SandboxExecResult:
    """The outcome of one command. `error_type` is set (and `return_code` is a sentinel such as
    `SANDBOX_RUNTIME_RETURN_CODE`) when the runtime failed or the command timed out; otherwise
    `return_code` is the command's own exit status (128+N when signal N killed it)."""

    stdout: str | None
    stderr: str | None
    return_code: int
    error_type: str | None = None


ExecResult = SandboxExecResult


@dataclass(frozen=True)
class SandboxPtySpec:
    """An interactive session to open: `command` (None: the shell itself), where, with what
    environment and as whom, and whether it gets a terminal (`pty=False`: plain pipes, with
    stderr kept apart)."""

    command: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    rows: int = 24
    cols: int = 80
    user: str | int | None = None
    pty: bool = True


class SandboxError(NemoGymError, RuntimeError):
    """A sandbox failed. A RuntimeError, as NeMo Gym's sandbox errors are: environments catch that."""


class SandboxPtyError(SandboxError):
    """An interactive session broke for a reason other than its process exiting."""


class SandboxCreateError(SandboxError):
    """A provider could not create (or reconnect to) a sandbox."""


class SandboxCreateVerificationError(SandboxCreateError):
    """A sandbox was created but never became ready to run commands."""


class SandboxProviderUnavailableError(SandboxCreateError):
    """The configured provider cannot run here; the message names what it needs."""


class ExecOptions(TypedDict, total=False):
    """The keyword options of `SandboxProvider.exec`, named once for the protocol and every provider.

    Unset (or None) means the provider's default: its working directory, its environment, its
    timeout, its user.
    """

    cwd: str | None
    env: dict[str, str] | None
    timeout_s: int | float | None
    user: str | int | None


class SandboxProvider(Protocol):
    """What `AsyncSandbox` needs from a backend. `create` returns only once commands and file
    transfers work; `exec` reports a failing command in its result rather than raising."""

    name: str

    async def create(self, spec: SandboxSpec) -> SandboxHandle: ...

    async def exec(
        self, handle: SandboxHandle, command: str, **options: Unpack[ExecOptions]
    ) -> SandboxExecResult: ...

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None: ...

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None: ...

    async def status(self, handle: SandboxHandle) -> SandboxStatus: ...

    async def close(self, handle: SandboxHandle) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsSandboxBackgroundServices(Protocol):
    """A backend whose ordinary `exec` would kill services a later command needs offers this."""

    async def exec_with_background_services(
        self,
        handle: SandboxHandle,
        command: str,
        *,
        cwd: str | None = None,
        timeout_s: int | float | None = None,
    ) -> SandboxExecResult: ...


@runtime_checkable
class SupportsSandboxNetwork(Protocol):
    """Sandboxes of this backend can reach each other by address (multi-service Compose)."""

    def validate_networking(self) -> None: ...

    async def network_address(self, handle: SandboxHandle) -> str: ...

    async def set_hosts(self, handle: SandboxHandle, hosts: Mapping[str, str]) -> None: ...


@runtime_checkable
class SupportsSandboxRuntimeRequirements(Protocol):
    """The backend can honour task-declared capabilities and shared-memory sizes."""

    def validate_runtime_requirements(
        self, *, cap_add: tuple[str, ...], shm_size: int | None
    ) -> dict[str, str] | None: ...

    async def configure_runtime(
        self, handle: SandboxHandle, *, cap_add: tuple[str, ...], shm_size: int | None
    ) -> None: ...


@runtime_checkable
class SupportsSandboxPortForwarding(Protocol):
    """The backend can forward loopback TCP ports into a sandbox until cancelled."""

    def validate_port_forwarding(self) -> None: ...

    async def forward_ports(
        self, handle: SandboxHandle, target_address: str, ports: tuple[int, ...], *, ready_file: str
    ) -> None: ...


@runtime_checkable
class SupportsSandboxSharedStorage(Protocol):
    """The backend mounts an operator-configured shared filesystem into sandboxes."""

    def shared_volume_options(
        self, source: str | None, target: str, *, read_only: bool = False
    ) -> dict[str, Any]: ...

    def shared_volume_metadata(self) -> dict[str, str]: ...


@runtime_checkable
class SupportsSandboxEndpoint(Protocol):
    """The backend can give callers a URL for a port declared in `SandboxSpec.ports`."""

    async def endpoint(self, handle: SandboxHandle, port: int) -> SandboxEndpoint: ...


@runtime_checkable
class SupportsSandboxPauseResume(Protocol):
    """The backend can freeze a sandbox and later continue it."""

    async def pause(self, handle: SandboxHandle) -> None: ...

    async def resume(self, handle: SandboxHandle) -> None: ...


@runtime_checkable
class SandboxPtySession(Protocol):
    """One live interactive process; an async context manager whose exit closes it.

    `read()` returns output chunks (everything in terminal mode, stdout in pipe mode) and
    `b""` once the process has exited and its output is drained."""

    session_id: str
    mode: str | None

    @property
    def closed(self) -> bool: ...

    async def read(self, *, timeout_s: float | None = None) -> bytes: ...

    async def read_stderr(self, *, timeout_s: float | None = None) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def send_signal(self, signal: str) -> None: ...

    async def wait_exit(self, *, timeout_s: float | None = None) -> int: ...

    async def run_detached(
        self, command: str, *, poll_interval_s: float = 15.0
    ) -> tuple[bytes, int | None]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> SandboxPtySession: ...

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None: ...


@runtime_checkable
class SupportsSandboxPty(Protocol):
    """The backend can open interactive sessions."""

    async def create_pty(self, handle: SandboxHandle, spec: SandboxPtySpec) -> SandboxPtySession: ...


@runtime_checkable
class SupportsSandboxPtyAttach(Protocol):
    """Sessions live in the sandbox, so another client can re-attach to one by id."""

    async def attach_pty(
        self,
        handle: SandboxHandle,
        session_id: str,
        *,
        takeover: bool = True,
        since: int | None = None,
    ) -> SandboxPtySession: ...


@runtime_checkable
class ConnectableProvider(Protocol):
    """A sandbox of this backend can be handed to another process: `serialize_handle` gives a
    JSON descriptor and `connect` rebuilds a live handle from it there."""

    async def serialize_handle(
        self, handle: SandboxHandle, *, scope: str | None = None
    ) -> dict[str, Any]: ...

    async def connect(self, descriptor: Mapping[str, Any]) -> SandboxHandle: ...
