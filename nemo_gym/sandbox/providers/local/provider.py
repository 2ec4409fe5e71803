"""`local`: each sandbox is a working directory on this host; commands are host processes.

There is no isolation: commands run as the server's user, see the whole filesystem and the
network, and inherit the server's environment (unless `inherit_env: false`). Use it for trusted
code and for development; use `isolated` (Linux namespaces) or `docker` for model-written code.
What it does guarantee: resource limits per command (see `host.py`), a wall-clock timeout, and
that every process group a command started is killed on timeout, when the sandbox closes and
when the server exits. A process that leaves its group (`setsid`) escapes that; `isolated`
does not have this gap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
from pathlib import Path

from nemo_gym.sandbox.providers.base import SandboxEndpoint, SandboxHandle, SandboxSpec
from nemo_gym.sandbox.providers.host import HostProvider, HostSandbox

LOGGER = logging.getLogger(__name__)


def _is_current_user(user: str | int) -> bool:
    uid = os.getuid()
    if isinstance(user, int) or str(user).isdigit():
        return int(user) == uid
    try:
        return pwd.getpwnam(str(user)).pw_uid == uid
    except KeyError:
        return False


class LocalProvider(HostProvider):
    """Host processes in a per-sandbox working directory (see the module docstring)."""

    name = "local"
    _id_prefix = "local"

    def _configure(self, *, inherit_env: bool = True) -> None:
        self._inherit_env = inherit_env

    async def _prepare(self, box: HostSandbox, spec: SandboxSpec) -> None:
        ignored = [name for name, value in (("image", spec.image), ("ttl_s", spec.ttl_s)) if value]
        if ignored:
            LOGGER.warning(
                "the local sandbox provider ignores %s; commands run on the host", ", ".join(ignored)
            )
        box.workdir = await asyncio.to_thread(self._make_dirs, box, spec.workdir)

    @staticmethod
    def _make_dirs(box: HostSandbox, workdir: str | None) -> str:
        directory = Path(box.directory)
        directory.mkdir(parents=True)
        if workdir:  # the caller's directory: used, never deleted
            path = Path(workdir).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            return str(path.resolve())
        (directory / "work").mkdir()
        return str(directory / "work")

    def _path(self, box: HostSandbox, path: str) -> Path:
        target = Path(path).expanduser()
        return target if target.is_absolute() else Path(box.workdir) / target

    def _argv(self, box: HostSandbox, command: str, cwd: str, user: str | int | None) -> list[str]:
        if user is not None and not _is_current_user(user):
            raise ValueError(
                f"the local sandbox provider runs commands as the server's own user and cannot switch to "
                f"user={user!r}; use the isolated or docker provider"
            )
        return [self._shell, "-c", command]

    def _host_cwd(self, box: HostSandbox, cwd: str) -> str:
        return str(self._path(box, cwd))

    def _base_env(self) -> dict[str, str]:
        if self._inherit_env:
            return dict(os.environ)
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def _entrypoint_log(self, box: HostSandbox) -> str:
        return str(Path(box.directory) / "entrypoint.log")

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None:
        """Copy a host file in; a relative target is relative to the sandbox's workdir."""
        target = self._path(handle.raw, target_path)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copy2, source_path, target)

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None:
        source = self._path(handle.raw, source_path)
        await asyncio.to_thread(target_path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copy2, source, target_path)

    async def endpoint(self, handle: SandboxHandle, port: int) -> SandboxEndpoint:
        """Commands share the host's network, so a declared port is on this host's loopback."""
        box: HostSandbox = handle.raw
        if port not in box.ports:
            raise ValueError(f"port {port} is not declared in SandboxSpec.ports (declared: {box.ports})")
        return SandboxEndpoint(endpoint=f"http://127.0.0.1:{port}")
