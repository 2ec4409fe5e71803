"""`AsyncSandbox`: one sandbox's life (start, exec, files, stop), whatever backend runs it.

Servers build one from a provider config block (`AsyncSandbox({"local": {}}, spec)`) or from a
provider object they share between sandboxes (`owns_provider=False`: they close it themselves).
A sandbox made in one process can be handed to another: `serialize()` there, `connect()` here,
and the borrower `disconnect()`s instead of stopping it.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from nemo_gym.sandbox.providers import (
    ConnectableProvider,
    SandboxEndpoint,
    SandboxExecResult,
    SandboxHandle,
    SandboxProvider,
    SandboxPtyError,
    SandboxPtySession,
    SandboxPtySpec,
    SandboxSpec,
    SandboxStatus,
    SupportsSandboxBackgroundServices,
    SupportsSandboxEndpoint,
    SupportsSandboxPauseResume,
    SupportsSandboxPty,
    SupportsSandboxPtyAttach,
    create_provider,
)
from nemo_gym.sandbox.providers.base import SANDBOX_RUNTIME_RETURN_CODE
from nemo_gym.sandbox.sync import LoopThread

DEFAULT_EXEC_TIMEOUT_S = 180


def _provider_name(provider: Any) -> str:
    return getattr(provider, "name", type(provider).__name__)


def _pty_timeout(command: str, timeout_s: float | None, *, session_left_running: bool) -> SandboxExecResult:
    note = "; the command is still running in that session, so discard it" if session_left_running else ""
    return SandboxExecResult(
        stdout=None,
        stderr=f"PTY command timed out after {timeout_s}s: {command!r}{note}",
        return_code=SANDBOX_RUNTIME_RETURN_CODE,
        error_type="timeout",
    )


async def _exec_in_session(session: SandboxPtySession, command: str) -> SandboxExecResult:
    """Run `command` in a live shell session and cut its output out of the stream.

    The command is wrapped in a brace group that prints a start marker, runs it with stdin at
    EOF, then prints an end marker with `$?`. Each marker is printed from two halves, so the
    terminal's echo of the input line can never contain the whole marker.
    """
    tag = uuid.uuid4().hex[:16]
    head, tail = f"NGS{tag[:8]}", f"{tag[8:]}"
    start, end = f"{head}{tail}B", f"{head}{tail}E:"
    script = f"{{ printf '%s%sB\\n' '{head}' '{tail}'\n{command}\nprintf '%s%sE:%s\\n' '{head}' '{tail}' \"$?\"\n}} </dev/null\n"
    await session.write(script.encode())
    buffer = bytearray()
    while end.encode() not in buffer:
        chunk = await session.read()
        if not chunk:
            raise SandboxPtyError("the session ended before the command finished")
        buffer.extend(chunk)
    before, _, after = bytes(buffer).partition(end.encode())
    while b"\n" not in after:
        chunk = await session.read()
        if not chunk:
            break
        after += chunk
    _, found, output = before.partition(start.encode())
    if found:
        output = output.partition(b"\n")[2]
    status_text = after.split(b"\n", 1)[0].strip()
    stderr = bytearray()
    try:
        while chunk := await session.read_stderr(timeout_s=0.05):
            stderr.extend(chunk)
    except TimeoutError:
        pass
    parsed = status_text.isdigit()
    return SandboxExecResult(
        stdout=output.replace(b"\r\n", b"\n").decode(errors="replace"),
        stderr=stderr.decode(errors="replace") or None,
        return_code=int(status_text) if parsed else SANDBOX_RUNTIME_RETURN_CODE,
        error_type=None if parsed else "pty",
    )


_P = ParamSpec("_P")
_T = TypeVar("_T")


class SandboxPty:
    """Interactive sessions of one sandbox (`sandbox.pty`), for providers that offer them."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox
        # The oldest open plain-shell session; exec() without a session reuses it.
        self._default: SandboxPtySession | None = None
        self._exec_lock = asyncio.Lock()

    def _provider_with(self, protocol: type, what: str) -> Any:
        provider = self._sandbox._provider
        if not isinstance(provider, protocol):
            raise NotImplementedError(
                f"sandbox provider {_provider_name(provider)!r} does not support {what}"
            )
        return provider

    async def create(
        self,
        command: str | None = None,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        rows: int = 24,
        cols: int = 80,
        user: str | int | None = None,
        pty: bool = True,
    ) -> SandboxPtySession:
        """Open a session running `command` (None: the shell). Close it before the sandbox stops."""
        provider = self._provider_with(SupportsSandboxPty, "PTY sessions; use exec() instead")
        spec = SandboxPtySpec(
            command=command,
            cwd=cwd if cwd is not None else self._sandbox._workdir(),
            env=env,
            rows=rows,
            cols=cols,
            user=user,
            pty=pty,
        )
        session = await provider.create_pty(self._sandbox._require_handle(), spec)
        if command is None and (self._default is None or self._default.closed):
            self._default = session
        return session

    async def attach(
        self, session_id: str, *, takeover: bool = True, since: int | None = None
    ) -> SandboxPtySession:
        """Re-attach to a session opened earlier, possibly by another process."""
        provider = self._provider_with(SupportsSandboxPtyAttach, "re-attaching PTY sessions")
        return await provider.attach_pty(
            self._sandbox._require_handle(), session_id, takeover=takeover, since=since
        )

    async def exec(
        self,
        command: str,
        *,
        session: SandboxPtySession | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = DEFAULT_EXEC_TIMEOUT_S,
        user: str | int | None = None,
        rows: int = 24,
        cols: int = 80,
        pty: bool = True,
        detach: bool = False,
        poll_interval_s: float = 15.0,
    ) -> SandboxExecResult:
        """Run one command through a session and collect its output.

        With `session`, or when the call shapes nothing (no cwd/env/user, default size, terminal
        mode) and a plain shell session is open, the command runs in that live shell (its state
        carries over; execs are serialized). Otherwise a private session runs just this command.
        A timeout returns `error_type="timeout"`; a shared session it happened in is retired.
        """
        if detach:
            return await self._exec_detached(
                command, session, cwd, env, user, rows, cols, pty, timeout_s, poll_interval_s
            )
        implicit = False
        shaped = cwd is not None or env is not None or user is not None or not pty or (rows, cols) != (24, 80)
        if session is None and not shaped:
            if self._default is not None and self._default.closed:
                self._default = None
            session, implicit = self._default, self._default is not None
        if session is not None:
            if cwd is not None or env is not None or user is not None:
                raise ValueError(
                    "cwd/env/user are fixed when a session is created; pass them to pty.create()"
                )
            try:
                async with asyncio.timeout(timeout_s):
                    async with self._exec_lock:
                        return await _exec_in_session(session, command)
            except TimeoutError:
                if implicit:
                    await _close_quietly(session)
                    if self._default is session:
                        self._default = None
                return _pty_timeout(command, timeout_s, session_left_running=True)
        private = await self.create(command, cwd=cwd, env=env, rows=rows, cols=cols, user=user, pty=pty)
        try:
            stdout, stderr, code = await asyncio.wait_for(
                asyncio.gather(_drain(private.read), _drain(private.read_stderr), private.wait_exit()),
                timeout=timeout_s,
            )
        except TimeoutError:
            return _pty_timeout(command, timeout_s, session_left_running=False)
        finally:
            await private.close()
        return SandboxExecResult(
            stdout=stdout.decode(errors="replace"),
            stderr=None if pty else stderr.decode(errors="replace"),
            return_code=code,
        )

    async def _exec_detached(
        self,
        command: str,
        session: SandboxPtySession | None,
        cwd: str | None,
        env: dict[str, str] | None,
        user: str | int | None,
        rows: int,
        cols: int,
        pty: bool,
        timeout_s: float | None,
        poll_interval_s: float,
    ) -> SandboxExecResult:
        private = session is None
        if private:
            session = await self.create(cwd=cwd, env=env, user=user, rows=rows, cols=cols, pty=pty)
            if self._default is session:
                self._default = None
        elif cwd is not None or env is not None or user is not None:
            raise ValueError("cwd/env/user are fixed when a session is created; pass them to pty.create()")
        run_detached = getattr(session, "run_detached", None)
        if run_detached is None:
            raise NotImplementedError(f"{type(session).__name__} cannot run detached commands")
        try:
            async with asyncio.timeout(timeout_s):
                async with self._exec_lock:
                    output, code = await run_detached(command, poll_interval_s=poll_interval_s)
        except TimeoutError:
            return _pty_timeout(command, timeout_s, session_left_running=not private)
        finally:
            if private:
                await session.close()
            elif hasattr(session, "reattach"):
                try:
                    await session.reattach()
                except Exception:  # a detached session the timeout left behind; the caller discards it
                    pass
        return SandboxExecResult(
            stdout=output.decode(errors="replace"),
            stderr=None,
            return_code=code if code is not None else SANDBOX_RUNTIME_RETURN_CODE,
            error_type=None if code is not None else "pty",
        )


async def _drain(read: Callable[[], Awaitable[bytes]]) -> bytes:
    out = bytearray()
    while chunk := await read():
        out.extend(chunk)
    return bytes(out)


async def _close_quietly(session: SandboxPtySession) -> None:
    try:
        await session.close()
    except Exception:  # closing a session whose command hung; nothing more to do
        pass


class AsyncSandbox:
    """One sandbox, backed by `provider` (a `{name: {keys}}` block or a provider object).

    `_provider` and `_handle` are read by NeMo Gym 0.7.0 servers (the sandbox id, whether the
    provider can connect), so their names are part of the interface.
    """

    def __init__(
        self,
        provider: Mapping[str, Any] | SandboxProvider,
        spec: SandboxSpec | None = None,
        *,
        owns_provider: bool = True,
    ) -> None:
        self._provider = create_provider(provider) if isinstance(provider, Mapping) else provider
        self._owns_provider = owns_provider
        self._spec = spec
        self._handle: SandboxHandle | None = None
        self._stopped = True
        self._closed = False
        self._connected = False
        self.pty = SandboxPty(self)

    def __repr__(self) -> str:
        sandbox_id = self._handle.sandbox_id if self._handle is not None else None
        return f"AsyncSandbox(provider={_provider_name(self._provider)!r}, sandbox_id={sandbox_id!r})"

    @property
    def sandbox_id(self) -> str | None:
        return self._handle.sandbox_id if self._handle is not None else None

    def _workdir(self) -> str | None:
        return self._spec.workdir if self._spec is not None else None

    def _require_handle(self) -> SandboxHandle:
        if self._handle is None or self._stopped:
            raise RuntimeError("the sandbox is not running: call start() first")
        return self._handle

    async def start(self, spec: SandboxSpec | None = None) -> AsyncSandbox:
        """Create the sandbox and write `spec.files` into it; a failure stops it again."""
        if self._closed:
            raise RuntimeError("this sandbox was stopped; create a new AsyncSandbox")
        if self._handle is not None and not self._stopped:
            raise RuntimeError("the sandbox is already started")
        spec = spec if spec is not None else self._spec
        if spec is None:
            raise ValueError("start() needs a SandboxSpec (pass it here or to the constructor)")
        handle = await self._provider.create(spec)
        self._handle, self._spec, self._stopped = handle, spec, False
        try:
            if spec.files:
                with tempfile.TemporaryDirectory(prefix="nemo_gym_sandbox_files_") as tmp:
                    for index, (target, text) in enumerate(spec.files.items()):
                        source = Path(tmp) / f"{index}"
                        source.write_text(text, encoding="utf-8")
                        await self._provider.upload_file(handle, source, target)
        except BaseException:
            await self.stop()
            raise
        return self

    async def start_with_setup(
        self, spec: SandboxSpec | None, setup: Callable[[AsyncSandbox], Awaitable[None]]
    ) -> AsyncSandbox:
        """`start()`, then `await setup(self)`; the sandbox is stopped if setup raises."""
        await self.start(spec)
        try:
            await setup(self)
        except BaseException:
            await self.stop()
            raise
        return self

    async def exec(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = DEFAULT_EXEC_TIMEOUT_S,
        user: str | int | None = None,
        preserve_background_services: bool = False,
    ) -> SandboxExecResult:
        """Run `command` with the shell of the sandbox, in `cwd` (default: the spec's workdir).

        `preserve_background_services` asks providers whose plain exec would end services that
        a later command needs to use their service-keeping path; it takes no env/user there.
        """
        handle = self._require_handle()
        cwd = cwd if cwd is not None else self._workdir()
        if preserve_background_services and isinstance(self._provider, SupportsSandboxBackgroundServices):
            if env is not None or user is not None:
                raise ValueError(
                    "preserve_background_services=True does not take env or user on this provider"
                )
            return await self._provider.exec_with_background_services(
                handle, command, cwd=cwd, timeout_s=timeout_s
            )
        return await self._provider.exec(handle, command, cwd=cwd, env=env, timeout_s=timeout_s, user=user)

    async def upload(self, local_path: Path | str, remote_path: str) -> None:
        await self._provider.upload_file(self._require_handle(), Path(local_path), remote_path)

    async def download(self, remote_path: str, local_path: Path | str) -> None:
        await self._provider.download_file(self._require_handle(), remote_path, Path(local_path))

    async def status(self) -> SandboxStatus:
        if self._handle is None:
            return SandboxStatus.UNKNOWN
        if self._stopped:
            return SandboxStatus.STOPPED
        return await self._provider.status(self._handle)

    async def endpoint(self, port: int) -> SandboxEndpoint:
        """A URL for service `port`, which the spec must have declared in `ports`."""
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"a sandbox endpoint port is an integer in 1..65535, got {port!r}")
        declared = tuple(self._spec.ports) if self._spec is not None else ()
        if port not in declared:
            raise ValueError(f"port {port} is not declared in SandboxSpec.ports (declared: {list(declared)})")
        if not isinstance(self._provider, SupportsSandboxEndpoint):
            raise NotImplementedError(
                f"sandbox provider {_provider_name(self._provider)!r} cannot expose service endpoints"
            )
        resolved = await self._provider.endpoint(self._require_handle(), port)
        if not isinstance(resolved, SandboxEndpoint):
            raise TypeError(
                f"the provider's endpoint() returned {type(resolved).__name__}, not SandboxEndpoint"
            )
        return resolved

    def _pausable(self) -> SupportsSandboxPauseResume:
        if not isinstance(self._provider, SupportsSandboxPauseResume):
            raise NotImplementedError(
                f"sandbox provider {_provider_name(self._provider)!r} cannot pause/resume"
            )
        return self._provider

    async def pause(self) -> None:
        await self._pausable().pause(self._require_handle())

    async def resume(self) -> None:
        await self._pausable().resume(self._require_handle())

    async def stop(self) -> None:
        """End the sandbox (idempotent). If the provider fails to close it, the error propagates
        and the sandbox stays open so the call can be retried."""
        if self._closed:
            return
        if self._handle is not None and not self._stopped:
            await self._provider.close(self._handle)
            self._stopped = True
        if self._owns_provider:
            await self._provider.aclose()
        self._closed = True

    async def disconnect(self) -> None:
        """Let go of a sandbox obtained with `connect()` without stopping it (its owner does)."""
        if self._closed:
            return
        if not self._connected:
            raise RuntimeError("disconnect() is for sandboxes obtained with connect(); call stop() instead")
        if self._owns_provider:
            await self._provider.aclose()
        self._handle, self._stopped, self._closed = None, True, True

    async def serialize(self, *, scope: str | None = None) -> dict[str, Any]:
        """A JSON descriptor another process passes to `connect()`, with this sandbox's workdir
        and declared ports added."""
        if not isinstance(self._provider, ConnectableProvider):
            raise RuntimeError(
                f"sandbox provider {_provider_name(self._provider)!r} does not support serialize()/connect()"
            )
        descriptor = await self._provider.serialize_handle(self._require_handle(), scope=scope)
        if isinstance(descriptor, dict) and self._spec is not None:
            if descriptor.get("workdir") is None:
                descriptor = {**descriptor, "workdir": self._spec.workdir}
            if self._spec.ports:
                descriptor = {**descriptor, "ports": list(self._spec.ports)}
        return descriptor

    @classmethod
    async def connect(
        cls, descriptor: Mapping[str, Any] | Any, *, provider: SandboxProvider, owns_provider: bool = True
    ) -> AsyncSandbox:
        """A handle on a sandbox another process started, from its `serialize()` descriptor."""
        if not isinstance(provider, ConnectableProvider):
            raise RuntimeError(
                f"sandbox provider {_provider_name(provider)!r} does not support serialize()/connect()"
            )
        if not isinstance(descriptor, Mapping) and hasattr(descriptor, "to_dict"):
            descriptor = descriptor.to_dict()
        if not isinstance(descriptor, Mapping):
            raise TypeError(f"a sandbox descriptor is a mapping, got {type(descriptor).__name__}")
        handle = await provider.connect(descriptor)
        spec = SandboxSpec(workdir=descriptor.get("workdir"), ports=descriptor.get("ports") or ())
        sandbox = cls(provider, spec, owns_provider=owns_provider)
        sandbox._handle, sandbox._stopped, sandbox._connected = handle, False, True
        return sandbox

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.stop()


def _blocking(
    method: Callable[Concatenate[AsyncSandbox, _P], Awaitable[_T]],
) -> Callable[Concatenate[Sandbox, _P], _T]:
    """The blocking twin of an AsyncSandbox method: the same signature, its coroutine run on the
    sandbox's event-loop thread."""

    @functools.wraps(method)
    def call(self: Sandbox, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return self._runner.run(method.__name__, lambda: method(self._async_sandbox, *args, **kwargs))

    return call


class Sandbox:
    """Blocking twin of `AsyncSandbox` for synchronous callers; its coroutines run on a private
    event-loop thread. Interactive sessions and serialize/connect are async-only."""

    def __init__(
        self, provider: Mapping[str, Any] | SandboxProvider, spec: SandboxSpec | None = None
    ) -> None:
        self._runner = LoopThread()
        try:
            self._async_sandbox = self._runner.call("__init__", lambda: AsyncSandbox(provider, spec))
        except BaseException:
            self._runner.close()
            raise
        self._closed = False

    def start(self, spec: SandboxSpec | None = None) -> Sandbox:
        self._runner.run("start", lambda: self._async_sandbox.start(spec))
        return self

    # The same calls as AsyncSandbox's, run on the loop thread.
    exec = _blocking(AsyncSandbox.exec)
    upload = _blocking(AsyncSandbox.upload)
    download = _blocking(AsyncSandbox.download)
    endpoint = _blocking(AsyncSandbox.endpoint)
    pause = _blocking(AsyncSandbox.pause)
    resume = _blocking(AsyncSandbox.resume)

    def status(self) -> SandboxStatus:
        if self._closed:
            return SandboxStatus.STOPPED
        return self._runner.run("status", self._async_sandbox.status)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run("stop", self._async_sandbox.stop)
        finally:
            self._runner.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.stop()
            except Exception:  # interpreter shutdown: best effort
                pass
