"""`docker`: one long-lived container per sandbox, driven through the `docker` CLI.

Why the CLI rather than the Engine API on its socket: the CLI already does what users have
configured for Docker — contexts, DOCKER_HOST (unix, tcp+TLS, ssh), registry credential helpers
for private images — and its flags are the config keys NeMo Gym 0.7.0's docker configs use
(`extra_run_args`, `provider_options.run_args`, `volumes`), so those configs work unchanged.
The cost is one short-lived client process per operation, small next to a container exec.

The container runs a keep-alive shell (not the image's entrypoint) so commands can be `docker
exec`'d into it; `docker rm -f` ends it. Spec env values reach docker through the client's
environment (`--env NAME`), never its command line, so they do not show in `ps` or errors. A
command that times out is killed inside the container too (found by a marker in its environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import posixpath
import shlex
import shutil
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Unpack

from nemo_gym.sandbox.providers.base import (
    SANDBOX_RUNTIME_RETURN_CODE,
    ExecOptions,
    SandboxCreateError,
    SandboxCreateVerificationError,
    SandboxEndpoint,
    SandboxExecResult,
    SandboxHandle,
    SandboxProviderUnavailableError,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
)
from nemo_gym.sandbox.providers.utils import coerce_config

LOGGER = logging.getLogger(__name__)

NAME_PREFIX = "nemo-gym-"
LABEL = "nemo-gym.sandbox"
EXEC_MARKER = "NEMO_GYM_SANDBOX_EXEC"
KEEPALIVE_SHELL = "/bin/sh"
KEEPALIVE_CMD = "while :; do sleep 2147483647; done"
PROBE_COMMAND = "printf docker-sandbox-ready"
PROBE_EXPECTED = "docker-sandbox-ready"
# Lines of daemon errors that mean the container or daemon, not the command, failed.
RUNTIME_ERRORS = (
    "no such container",
    "is not running",
    "is paused",
    "cannot connect to the docker daemon",
    "error response from daemon",
)
MISSING_CONTAINER = ("no such container", "no such object")
INSTALL_HINT = "the `docker` CLI on PATH and a running Docker daemon (Debian: apt-get install docker.io)"


class DockerCreateError(SandboxCreateError):
    """Docker could not create the container."""


class DockerCreateVerificationError(SandboxCreateVerificationError):
    """The container started but never passed its readiness probe."""


@dataclass(frozen=True)
class DockerCreateConfig:
    keepalive_shell: str = KEEPALIVE_SHELL
    keepalive_cmd: str = KEEPALIVE_CMD
    start_timeout_s: float | None = 600
    use_init: bool = True
    network: str | None = None  # None: docker's default bridge; "none": no network; else a network name
    read_only: bool = False
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    pids_limit: int | None = None
    extra_run_args: list[str] = field(default_factory=list)
    apply_resource_limits: bool = True
    publish_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.start_timeout_s is not None and self.start_timeout_s <= 0:
            raise ValueError("docker create.start_timeout_s must be > 0")
        if self.pids_limit is not None and self.pids_limit <= 0:
            raise ValueError("docker create.pids_limit must be > 0")
        try:
            ipaddress.ip_address(self.publish_host)
        except ValueError as exc:
            raise ValueError(
                f"docker create.publish_host must be an IP address, got {self.publish_host!r}"
            ) from exc


@dataclass(frozen=True)
class DockerExecConfig:
    default_timeout_s: float | None = 180
    extra_exec_args: list[str] = field(default_factory=list)
    concurrency: int = 32
    exec_shell: str | None = None  # None: bash when the image has it, else sh

    def __post_init__(self) -> None:
        if self.default_timeout_s is not None and self.default_timeout_s <= 0:
            raise ValueError("docker exec.default_timeout_s must be > 0")
        if self.concurrency < 1:
            raise ValueError("docker exec.concurrency must be >= 1")
        if self.exec_shell is not None and not self.exec_shell:
            raise ValueError("docker exec.exec_shell must be null (detect) or a shell")


@dataclass(frozen=True)
class DockerProbeConfig:
    command: str | None = PROBE_COMMAND
    expected_stdout: str | None = PROBE_EXPECTED
    timeout_s: float = 30
    deadline_s: float | None = None
    stable_count: int = 1
    stable_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.command is not None and self.timeout_s <= 0:
            raise ValueError("docker probe.timeout_s must be > 0")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("docker probe.deadline_s must be > 0")
        if self.stable_count < 1:
            raise ValueError("docker probe.stable_count must be >= 1")
        if self.stable_delay_s < 0:
            raise ValueError("docker probe.stable_delay_s must be >= 0")


@dataclass
class DockerContainer:
    name: str
    image: str
    shell: str = "sh"
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise DockerCreateError(f"provider_options.{what} must be a string or a list, got {type(value).__name__}")


def _status_of(state: str) -> SandboxStatus:
    state = state.strip().lower()
    if state == "running":
        return SandboxStatus.RUNNING
    if state == "paused":
        return SandboxStatus.PAUSED
    if state in ("created", "restarting"):
        return SandboxStatus.STARTING
    if state in ("exited", "removing", "dead"):
        return SandboxStatus.STOPPED
    return SandboxStatus.UNKNOWN


def _has(text: str, markers: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(marker in low for marker in markers)


def resource_flags(resources: SandboxResources) -> list[str]:
    """`docker run` flags enforcing the spec's resources (memory without extra swap)."""
    flags: list[str] = []
    if resources.cpu is not None:
        flags += ["--cpus", f"{resources.cpu:g}"]
    if resources.memory_mib is not None:
        flags += ["--memory", f"{resources.memory_mib}m", "--memory-swap", f"{resources.memory_mib}m"]
    return flags


class DockerExecOptions(ExecOptions, total=False):
    """`exec`'s options on Docker, which can also feed the command's standard input."""

    stdin: bytes | None


class DockerProvider:
    """Sandboxes as Docker containers (see the module docstring)."""

    name = "docker"
    # binary -> None when its daemon answered, else why not (checked once per process).
    _daemon: ClassVar[dict[str, str | None]] = {}

    def __init__(
        self,
        *,
        exec: DockerExecConfig | Mapping[str, Any] | None = None,
        create: DockerCreateConfig | Mapping[str, Any] | None = None,
        probe: DockerProbeConfig | Mapping[str, Any] | None = None,
        binary: str | None = None,
    ) -> None:
        self._exec_cfg = coerce_config(exec, DockerExecConfig, "docker exec")
        self._create_cfg = coerce_config(create, DockerCreateConfig, "docker create")
        self._probe_cfg = coerce_config(probe, DockerProbeConfig, "docker probe")
        found = binary or shutil.which("docker")
        if found is None or not os.access(found, os.X_OK):
            raise SandboxProviderUnavailableError(
                f"sandbox provider 'docker' needs {INSTALL_HINT}; no `docker` found"
            )
        self._binary = found
        self._semaphore: asyncio.Semaphore | None = None

    # -- the CLI -------------------------------------------------------------------------------

    async def _docker(
        self,
        args: list[str],
        *,
        timeout_s: float | None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, str, str]:
        """(status, stdout, stderr) of `docker args...`; the client is killed at the timeout."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._exec_cfg.concurrency)
        async with self._semaphore:
            process = await asyncio.create_subprocess_exec(
                self._binary,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
            try:
                out, err = await asyncio.wait_for(process.communicate(stdin), timeout_s)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), 5)
                raise
        return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def _require_daemon(self) -> None:
        if self._binary not in self._daemon:
            try:
                code, out, err = await self._docker(
                    ["version", "--format", "{{.Server.Version}}"], timeout_s=30
                )
            except TimeoutError:
                code, out, err = 1, "", "no answer within 30s"
            reason = None
            if code != 0 or not out.strip():
                detail = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
                reason = f"sandbox provider 'docker' cannot reach a Docker daemon ({detail}); it needs {INSTALL_HINT}"
            self._daemon[self._binary] = reason
        if self._daemon[self._binary] is not None:
            raise SandboxProviderUnavailableError(self._daemon[self._binary])

    # -- lifecycle -----------------------------------------------------------------------------

    def _run_args(self, name: str, image: str, spec: SandboxSpec) -> list[str]:
        cfg = self._create_cfg
        args = ["run", "-d", "--name", name, "--label", f"{LABEL}=1"]
        if cfg.use_init:
            args.append("--init")
        if spec.workdir:
            args += ["-w", spec.workdir]
        for key in spec.env:
            args += ["--env", key]  # the value travels in the client's environment
        args += self._confinement_args(spec)
        host = f"[{cfg.publish_host}]" if ":" in cfg.publish_host else cfg.publish_host
        for port in spec.ports:
            args += ["--publish", f"{host}::{port}/tcp"]
        for volume in _strings(spec.provider_options.get("volumes"), "volumes"):
            args += ["-v", volume]
        args += list(cfg.extra_run_args) + _strings(spec.provider_options.get("run_args"), "run_args")
        if spec.entrypoint:
            if spec.ttl_s is not None:
                LOGGER.warning("docker: ttl_s is not enforced for a sandbox with its own entrypoint")
            return [*args, "--entrypoint", spec.entrypoint[0], image, *spec.entrypoint[1:]]
        if spec.ttl_s is not None:  # the container removes itself when the keep-alive ends
            keepalive = f"sleep {max(1, math.ceil(spec.ttl_s))}"
            args.append("--rm")
        else:
            keepalive = cfg.keepalive_cmd
        return [*args, "--entrypoint", cfg.keepalive_shell, image, "-c", keepalive]

    def _confinement_args(self, spec: SandboxSpec) -> list[str]:
        """Resources, network and privileges the container runs with."""
        cfg = self._create_cfg
        args: list[str] = []
        if cfg.apply_resource_limits:
            args += resource_flags(spec.resources)
        if spec.resources.gpu:
            args += ["--gpus", str(spec.resources.gpu)]
        if cfg.network is not None:
            args += ["--network", cfg.network]
        if cfg.read_only:
            args.append("--read-only")
        for cap in cfg.cap_drop:
            args += ["--cap-drop", cap]
        for option in cfg.security_opt:
            args += ["--security-opt", option]
        if cfg.pids_limit is not None:
            args += ["--pids-limit", str(cfg.pids_limit)]
        return args

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Start the container, wait until the probe passes, pick the exec shell."""
        if not spec.image:
            raise DockerCreateError("the docker provider needs SandboxSpec.image")
        await self._require_daemon()
        image = spec.image.removeprefix("docker://")
        name = NAME_PREFIX + uuid.uuid4().hex
        args = self._run_args(name, image, spec)
        env = {str(k): str(v) for k, v in spec.env.items()}
        try:
            code, _, err = await self._docker(args, timeout_s=self._create_cfg.start_timeout_s, env=env)
        except TimeoutError as exc:
            await self._remove(name)
            raise DockerCreateError(
                f"docker run of {image!r} did not finish within {self._create_cfg.start_timeout_s:g}s"
            ) from exc
        if code != 0:
            await self._remove(name)
            raise DockerCreateError(f"docker run of {image!r} failed (exit {code}): {err.strip()}")
        container = DockerContainer(
            name=name, image=image, workdir=spec.workdir, env=env, ports=tuple(spec.ports)
        )
        handle = SandboxHandle(sandbox_id=name, provider_name=self.name, raw=container)
        try:
            await self._wait_ready(handle)
            container.shell = await self._pick_shell(name)
        except BaseException:
            await self._remove(name)
            raise
        return handle

    async def _pick_shell(self, name: str) -> str:
        if self._exec_cfg.exec_shell:
            return self._exec_cfg.exec_shell
        with contextlib.suppress(Exception):
            code, _, _ = await self._docker(["exec", name, "sh", "-c", "command -v bash"], timeout_s=30)
            if code == 0:
                return "bash"
        return "sh"

    async def _wait_ready(self, handle: SandboxHandle) -> None:
        """Run the probe until it passes `stable_count` times in a row (or fails for good)."""
        probe = self._probe_cfg
        if probe.command is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + probe.deadline_s if probe.deadline_s is not None else None
        streak, last = 0, "no attempt finished"
        while True:
            result = await self.exec(handle, probe.command, timeout_s=probe.timeout_s)
            ok = result.return_code == 0 and (
                probe.expected_stdout is None or probe.expected_stdout in (result.stdout or "")
            )
            if ok:
                streak += 1
                if streak >= probe.stable_count:
                    return
            else:
                streak = 0
                last = f"exit {result.return_code}: {(result.stderr or '').strip()[:300]}"
                if deadline is None:
                    raise DockerCreateVerificationError(
                        f"container {handle.sandbox_id} failed its readiness probe ({last})"
                    )
            if deadline is not None and loop.time() >= deadline:
                raise DockerCreateVerificationError(
                    f"container {handle.sandbox_id} did not pass its readiness probe within {probe.deadline_s:g}s ({last})"
                )
            if probe.stable_delay_s:
                await asyncio.sleep(probe.stable_delay_s)

    async def _remove(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._docker(["rm", "-f", name], timeout_s=60)

    async def serialize_handle(self, handle: SandboxHandle, *, scope: str | None = None) -> dict[str, Any]:
        return {"sandbox_id": handle.sandbox_id}

    async def connect(self, descriptor: Mapping[str, Any]) -> SandboxHandle:
        """A handle on a running container from its name (image and shell are looked up)."""
        name = str(descriptor.get("sandbox_id") or "")
        if not name:
            raise DockerCreateError("connecting to a docker sandbox needs its sandbox_id")
        await self._require_daemon()
        code, out, err = await self._docker(
            ["inspect", "--format", "{{.State.Running}}\t{{.Config.Image}}\t{{.Config.WorkingDir}}", name],
            timeout_s=60,
        )
        if code != 0:
            raise DockerCreateError(f"cannot connect to container {name!r}: {err.strip() or out.strip()}")
        running, image, workdir = (out.strip().split("\t") + ["", ""])[:3]
        if running != "true":
            raise DockerCreateError(f"cannot connect to container {name!r}: it is not running")
        container = DockerContainer(
            name=name,
            image=image,
            shell=await self._pick_shell(name),
            workdir=descriptor.get("workdir") or workdir or None,
            ports=tuple(descriptor.get("ports") or ()),
        )
        return SandboxHandle(sandbox_id=name, provider_name=self.name, raw=container)

    def validate_networking(self) -> None:
        """Compose services reach each other over docker's network, so one must exist."""
        if self._create_cfg.network == "none":
            raise ValueError("docker sandboxes cannot reach each other with create.network: none")

    async def network_address(self, handle: SandboxHandle) -> str:
        code, out, err = await self._docker(
            ["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", handle.raw.name],
            timeout_s=60,
        )
        addresses = out.split() if code == 0 else []
        if not addresses:
            raise RuntimeError(
                f"container {handle.raw.name} has no network address: {err.strip() or out.strip()}"
            )
        return addresses[0]

    async def set_hosts(self, handle: SandboxHandle, hosts: Mapping[str, str]) -> None:
        """Add `address name` lines to the container's /etc/hosts."""
        lines = " ".join(shlex.quote(f"{address} {name}") for name, address in sorted(hosts.items()))
        result = await self.exec(handle, f"printf '%s\\n' {lines} >> /etc/hosts", user="root", timeout_s=60)
        if result.return_code != 0:
            raise RuntimeError(f"cannot write /etc/hosts of {handle.raw.name}: {result.stderr}")

    async def status(self, handle: SandboxHandle) -> SandboxStatus:
        try:
            code, out, err = await self._docker(
                ["inspect", "-f", "{{.State.Status}}", handle.raw.name], timeout_s=60
            )
        except TimeoutError:
            return SandboxStatus.UNKNOWN
        if code != 0:
            return SandboxStatus.STOPPED if _has(err, MISSING_CONTAINER) else SandboxStatus.UNKNOWN
        return _status_of(out)

    async def pause(self, handle: SandboxHandle) -> None:
        code, _, err = await self._docker(["pause", handle.raw.name], timeout_s=60)
        if code != 0:
            raise RuntimeError(f"docker pause of {handle.raw.name} failed: {err.strip()}")

    async def resume(self, handle: SandboxHandle) -> None:
        code, _, err = await self._docker(["unpause", handle.raw.name], timeout_s=60)
        if code != 0:
            raise RuntimeError(f"docker unpause of {handle.raw.name} failed: {err.strip()}")

    async def close(self, handle: SandboxHandle) -> None:
        """Remove the container; one that is already gone counts as closed."""
        code, _, err = await self._docker(["rm", "-f", handle.raw.name], timeout_s=120)
        if code != 0 and not _has(err, MISSING_CONTAINER):
            raise RuntimeError(f"docker rm -f {handle.raw.name} failed (exit {code}): {err.strip()}")

    async def aclose(self) -> None:
        return None

    # -- commands and files --------------------------------------------------------------------

    async def exec(
        self, handle: SandboxHandle, command: str, **options: Unpack[DockerExecOptions]
    ) -> SandboxExecResult:
        """`<shell> -c command` in the container; a failing command is a result, not an error."""
        container: DockerContainer = handle.raw
        cwd, env, user = options.get("cwd"), options.get("env"), options.get("user")
        stdin, timeout_s = options.get("stdin"), options.get("timeout_s")
        marker = uuid.uuid4().hex
        variables = {**container.env, **{str(k): str(v) for k, v in (env or {}).items()}, EXEC_MARKER: marker}
        args = ["exec"]
        if stdin is not None:
            args.append("-i")
        if cwd is not None:
            args += ["-w", cwd]
        for key in variables:
            args += ["--env", key]
        if user is not None:
            args += ["--user", "0" if user in ("root", 0) else str(user)]
        args += [*self._exec_cfg.extra_exec_args, container.name, container.shell, "-c", command]
        timeout = timeout_s if timeout_s is not None else self._exec_cfg.default_timeout_s
        try:
            code, out, err = await self._docker(args, timeout_s=timeout, env=variables, stdin=stdin)
        except TimeoutError:
            await self._kill_marked(container, marker)
            return SandboxExecResult(
                stdout=None,
                stderr=f"[sandbox: command timed out after {timeout:g}s; its processes in the container were killed]",
                return_code=SANDBOX_RUNTIME_RETURN_CODE,
                error_type="timeout",
            )
        if code != 0 and _has(err, RUNTIME_ERRORS):
            return SandboxExecResult(
                stdout=out, stderr=err, return_code=SANDBOX_RUNTIME_RETURN_CODE, error_type="sandbox"
            )
        return SandboxExecResult(stdout=out, stderr=err, return_code=code)

    async def _kill_marked(self, container: DockerContainer, marker: str) -> None:
        """Kill the container processes of a timed-out exec: they carry its marker in their env."""
        script = (
            "for p in /proc/[0-9]*; do "
            f"if tr '\\0' '\\n' < $p/environ 2>/dev/null | grep -qx '{EXEC_MARKER}={marker}'; "
            "then kill -9 ${p#/proc/} 2>/dev/null; fi; done; true"
        )
        with contextlib.suppress(Exception):
            await self._docker(["exec", "--user", "0", container.name, "sh", "-c", script], timeout_s=30)

    def _container_path(self, container: DockerContainer, path: str) -> str:
        if path.startswith("/"):
            return path
        return posixpath.join(container.workdir or "/", path)

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None:
        container: DockerContainer = handle.raw
        target = self._container_path(container, target_path)
        parent = posixpath.dirname(target)
        made = await self.exec(handle, f"mkdir -p -- {shlex.quote(parent)}", user="root", timeout_s=60)
        if made.return_code != 0:
            raise RuntimeError(f"upload to {target_path!r}: cannot create {parent!r}: {made.stderr}")
        code, _, err = await self._docker(
            ["cp", str(source_path), f"{container.name}:{target}"], timeout_s=600
        )
        if code != 0:
            raise RuntimeError(f"docker cp to {target_path!r} failed: {err.strip()}")

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None:
        container: DockerContainer = handle.raw
        source = self._container_path(container, source_path)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        code, _, err = await self._docker(
            ["cp", f"{container.name}:{source}", str(target_path)], timeout_s=600
        )
        if code != 0:
            raise FileNotFoundError(f"docker cp of {source_path!r} failed: {err.strip()}")

    async def endpoint(self, handle: SandboxHandle, port: int) -> SandboxEndpoint:
        """The host address docker published `port` on."""
        container: DockerContainer = handle.raw
        if port not in container.ports:
            raise ValueError(
                f"port {port} is not declared in SandboxSpec.ports (declared: {list(container.ports)})"
            )
        code, out, err = await self._docker(["port", container.name, f"{port}/tcp"], timeout_s=60)
        if code != 0:
            raise RuntimeError(f"docker port {container.name} {port} failed: {err.strip()}")
        bindings = [line.strip() for line in out.splitlines() if line.strip()]
        if not bindings:
            raise RuntimeError(f"docker published no host port for sandbox port {port}")
        binding = next((b for b in bindings if b.startswith("127.0.0.1:")), bindings[0])
        host, _, host_port = binding.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        if host in ("0.0.0.0", "::"):
            host = self._create_cfg.publish_host
        if not host_port.isdigit():
            raise RuntimeError(f"docker port returned an unreadable binding {binding!r}")
        shown = f"[{host}]" if ":" in host else host
        return SandboxEndpoint(endpoint=f"http://{shown}:{int(host_port)}")
