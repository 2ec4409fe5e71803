"""`isolated`: host processes confined with Linux namespaces (bubblewrap), for model-written code.

Each command runs under `bwrap` in fresh user, mount, PID, IPC, UTS and network namespaces,
with every capability dropped, no_new_privs set and new user namespaces disabled inside. A
root server first hands the command to the host user `nobody` (`host_uid`), so inside it looks
like root but owns nothing of the host's:

- the filesystem it sees is the sandbox's own directory as `/` (writable, kept between
  commands: the workdir, `/tmp`, `/root`, anything it creates), the host's system directories
  (`/usr`, and `/bin`, `/lib`... where they are real directories) read-only, a short list of
  harmless `/etc` files read-only, and a private `/proc` and `/dev`. Nothing else of the host
  exists for it: not `/home`, `/root`, `/work`, the host's `/tmp`, nor other sandboxes;
- its network namespace has only a loopback interface of its own, so neither the internet nor
  a server on the host's loopback is reachable (`network: host` opts out, for harnesses that
  must call a model server);
- its PID namespace dies with the command: when the command ends, times out or the server
  exits, every process it started is killed, including ones that called `setsid`.

File transfers run `cat` inside the sandbox, so a symlink the code planted resolves inside the
sandbox's own tree, never on the host. Resource limits are those of `host.py`.
Needs the `bwrap` binary (Debian/Ubuntu package `bubblewrap`) and a kernel that lets this user
create user namespaces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import shlex
import shutil
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from nemo_gym.sandbox.providers import _process
from nemo_gym.sandbox.providers.base import (
    SandboxCreateError,
    SandboxHandle,
    SandboxProviderUnavailableError,
    SandboxSpec,
)
from nemo_gym.sandbox.providers.host import HostProvider, HostSandbox

LOGGER = logging.getLogger(__name__)

INSTALL_HINT = "install the `bubblewrap` package (Debian/Ubuntu: apt-get install bubblewrap)"
# Host directories holding programs and libraries, bound read-only where they exist. On
# merged-/usr systems most of them are symlinks into /usr; those become the same symlinks.
DEFAULT_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc entries programs need to run and that say nothing about the host's users or secrets.
DEFAULT_ETC_FILES = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "ssl/certs",  # public CA certificates only: /etc/ssl/private holds the host's keys
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "protocols",
    "services",
    "bash.bashrc",
    "profile",
    "inputrc",
    "terminfo",
    "gai.conf",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
)
# Where commands start when the spec names no workdir.
DEFAULT_WORKDIR = "/workspace"
# Paths a workdir may not be placed under: they are read-only or managed by bwrap.
RESERVED_PREFIXES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/dev", "/etc")
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534


def _inside_path(path: str, default_dir: str) -> str:
    """An absolute, normalized path inside the sandbox (relative paths are relative to `default_dir`)."""
    joined = path if path.startswith("/") else posixpath.join(default_dir, path)
    return posixpath.normpath(joined)


class IsolatedProvider(HostProvider):
    """Commands under bubblewrap namespaces (see the module docstring)."""

    name = "isolated"
    _id_prefix = "isolated"
    # bwrap path -> None when it works here, else why not (probed once per process).
    _probed: ClassVar[dict[str, str | None]] = {}
    # bwrap path -> whether it has --disable-userns (bubblewrap 0.8+).
    _disable_userns: ClassVar[dict[str, bool]] = {}

    def _configure(
        self,
        *,
        network: str = "none",
        uid: int = 0,
        gid: int = 0,
        system_paths: list[str] | None = None,
        etc_files: list[str] | None = None,
        ro_binds: list[str] | None = None,
        bwrap: str | None = None,
        host_uid: int | None = None,
        max_processes: int | None = None,
    ) -> None:
        if network not in ("none", "host"):
            raise ValueError(f"isolated.network must be 'none' or 'host', got {network!r}")
        for key, value in (("uid", uid), ("gid", gid)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"isolated.{key} must be a non-negative integer, got {value!r}")
        binary = bwrap or shutil.which("bwrap")
        if binary is None or not os.access(binary, os.X_OK):
            raise SandboxProviderUnavailableError(
                f"the 'isolated' sandbox provider needs bubblewrap: no `bwrap` "
                f"{'at ' + repr(bwrap) if bwrap else 'on PATH'}; {INSTALL_HINT}"
            )
        for key, paths in (("system_paths", system_paths), ("ro_binds", ro_binds)):
            for path in paths or ():
                if not str(path).startswith("/"):
                    raise ValueError(f"isolated.{key} takes absolute host paths, got {path!r}")
        self._bwrap = binary
        self._network = network
        self._uid, self._gid = uid, gid
        self._system_paths = list(system_paths) if system_paths is not None else list(DEFAULT_SYSTEM_PATHS)
        self._etc_files = list(etc_files) if etc_files is not None else list(DEFAULT_ETC_FILES)
        if network == "host":
            self._etc_files.append("resolv.conf")
        self._ro_binds = list(ro_binds or ())
        self._host_user = self._pick_host_user(host_uid)
        if max_processes is not None and max_processes < 1:
            raise ValueError(f"isolated.max_processes must be >= 1, got {max_processes}")
        self._max_processes = max_processes

    @staticmethod
    def _pick_host_user(host_uid: int | None) -> tuple[int, int] | None:
        """The host user sandboxed commands run as. A root server hands them to `nobody` (or
        `host_uid`): inside they still look like root, but host files owned by root are then
        not theirs, so nothing root-only is readable even where a bind would expose it."""
        if os.geteuid() != 0:
            if host_uid is not None and host_uid != os.geteuid():
                raise ValueError(
                    f"isolated.host_uid={host_uid} needs a server running as root (it runs as uid {os.geteuid()})"
                )
            return None
        uid = NOBODY if host_uid is None else host_uid
        if uid == 0:
            return None  # explicitly asked to keep root
        return (uid, uid if host_uid is not None else NOBODY)

    def _limits(self, box: HostSandbox) -> _process.Limits:
        return replace(super()._limits(box), user=self._host_user, processes=self._max_processes)

    # -- the sandbox's tree --------------------------------------------------------------------

    def _home(self, uid: int) -> str:
        return "/root" if uid == 0 else "/home/sandbox"

    async def _prepare(self, box: HostSandbox, spec: SandboxSpec) -> None:
        if spec.entrypoint:
            raise SandboxCreateError(
                "the isolated provider ends every process of a command when the command ends, so "
                "spec.entrypoint cannot run as a lasting service; start the service inside the command "
                "that uses it, or use the local or docker provider"
            )
        if spec.image:
            LOGGER.info(
                "the isolated sandbox provider runs the host's system read-only; image=%r is ignored",
                spec.image,
            )
        workdir = _inside_path(spec.workdir or DEFAULT_WORKDIR, "/")
        if workdir == "/" or any(workdir == p or workdir.startswith(p + "/") for p in RESERVED_PREFIXES):
            raise SandboxCreateError(
                f"isolated sandbox workdir {workdir!r} must not be / or under {RESERVED_PREFIXES}"
            )
        box.workdir = workdir
        await asyncio.to_thread(self._make_tree, box)
        reason = await self._probe(box)
        if reason is not None:
            raise SandboxProviderUnavailableError(reason)

    def _rootfs(self, box: HostSandbox) -> Path:
        return Path(box.directory) / "rootfs"

    def _check_reachable(self) -> None:
        """The host user commands run as must be able to enter workspace_root to bind it."""
        if self._host_user is None:
            return
        for directory in [self._root, *self._root.parents]:
            mode = directory.stat().st_mode
            owner = directory.stat().st_uid == self._host_user[0]
            if not (mode & 0o001 or (owner and mode & 0o100)):
                raise SandboxCreateError(
                    f"isolated.workspace_root {self._root} is inside {directory} (mode {mode & 0o777:o}), which "
                    f"sandboxed commands (host uid {self._host_user[0]}) cannot enter: choose a workspace_root "
                    "whose parent directories others may traverse (chmod o+x), or set host_uid: 0"
                )

    def _make_tree(self, box: HostSandbox) -> None:
        # Other host users may pass through but not list: sandbox ids are unguessable.
        self._root.chmod(0o711)
        self._check_reachable()
        rootfs = self._rootfs(box)
        (rootfs / "etc").mkdir(parents=True)
        for path in self._system_paths:
            host = Path(path)
            if host.is_symlink():
                (rootfs / path.lstrip("/")).symlink_to(os.readlink(host))
        tmp = rootfs / "tmp"
        tmp.mkdir()
        tmp.chmod(0o1777)
        (rootfs / "var" / "tmp").mkdir(parents=True)
        home = self._home(self._uid)
        (rootfs / home.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (rootfs / box.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        shell = self._shell
        (rootfs / "etc" / "passwd").write_text(
            f"root:x:0:0:root:/root:{shell}\n"
            + (f"sandbox:x:{self._uid}:{self._gid}:sandbox:{home}:{shell}\n" if self._uid != 0 else "")
            + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (rootfs / "etc" / "group").write_text(
            "root:x:0:\n" + (f"sandbox:x:{self._gid}:\n" if self._gid != 0 else "") + "nogroup:x:65534:\n"
        )
        (rootfs / "etc" / "hostname").write_text("sandbox\n")
        (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n")
        if self._host_user is not None:
            uid, gid = self._host_user
            for path in [rootfs, *rootfs.rglob("*")]:
                os.lchown(path, uid, gid)

    async def _probe(self, box: HostSandbox) -> str | None:
        """Why bwrap cannot run here (None: it can), found once per process."""
        if self._bwrap not in self._disable_userns:
            helper = await asyncio.create_subprocess_exec(
                self._bwrap, "--help", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            usage, _ = await helper.communicate()
            self._disable_userns[self._bwrap] = b"--disable-userns" in usage
        if self._bwrap not in self._probed:
            done = await self._run(box, "true", cwd=None, env=None, timeout_s=30, user=None)
            if done.return_code == 0:
                self._probed[self._bwrap] = None
            else:
                detail = done.stderr.decode(errors="replace").strip() or f"exit status {done.return_code}"
                reason = (
                    f"the 'isolated' sandbox provider cannot run bubblewrap here ({self._bwrap}: {detail})"
                )
                if "namespace" in detail or "uid map" in detail or "Operation not permitted" in detail:
                    reason += (
                        ". It needs unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 "
                        "(Debian), kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 23.10+), and inside a "
                        "container a seccomp profile that allows unshare/clone with namespace flags"
                    )
                return reason  # not cached: it may be this sandbox's fault, not the host's
        return self._probed[self._bwrap]

    # -- running commands ----------------------------------------------------------------------

    def _identity(self, box: HostSandbox, user: str | int | None) -> tuple[int, int]:
        if user is None:
            return self._uid, self._gid
        if isinstance(user, int) or str(user).isdigit():
            return int(user), int(user) if int(user) != self._uid else self._gid
        if user == "root":
            return 0, 0
        for line in self._read_sandbox_file(box, "etc/passwd").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == user and fields[2].isdigit() and fields[3].isdigit():
                return int(fields[2]), int(fields[3])
        raise ValueError(f"no user {user!r} in the isolated sandbox's /etc/passwd")

    def _read_sandbox_file(self, box: HostSandbox, relative: str) -> str:
        """Read a small file of the sandbox's tree without following a symlink out of it."""
        flags = os.O_RDONLY | os.O_NOFOLLOW
        directory = os.open(self._rootfs(box), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in relative.split("/")[:-1]:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
                os.close(directory)
                directory = inner
            fd = os.open(relative.split("/")[-1], flags, dir_fd=directory)
        except OSError:
            return ""
        finally:
            os.close(directory)
        with os.fdopen(fd, "r", errors="replace") as handle:
            return handle.read(1 << 20)

    def _argv(self, box: HostSandbox, command: str, cwd: str, user: str | int | None) -> list[str]:
        uid, gid = self._identity(box, user)
        argv = [
            self._bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *(["--disable-userns"] if self._disable_userns.get(self._bwrap) else []),
            "--cap-drop",
            "ALL",
            "--uid",
            str(uid),
            "--gid",
            str(gid),
            "--hostname",
            "sandbox",
        ]
        if self._network == "none":
            argv.append("--unshare-net")
        argv += ["--bind", str(self._rootfs(box)), "/"]
        for path in self._system_paths:
            if os.path.isdir(path) and not os.path.islink(path):
                argv += ["--ro-bind", path, path]
        for name in self._etc_files:
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for path in self._ro_binds:
            argv += ["--ro-bind-try", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--chdir", _inside_path(cwd, box.workdir)]
        return [*argv, "--", self._shell, "-c", command]

    def _host_cwd(self, box: HostSandbox, cwd: str) -> str:
        return box.directory

    def _base_env(self) -> dict[str, str]:
        home = self._home(self._uid)
        user = "root" if self._uid == 0 else "sandbox"
        return {
            "PATH": SANDBOX_PATH,
            "HOME": home,
            "USER": user,
            "LOGNAME": user,
            "SHELL": self._shell,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
        }

    def _entrypoint_log(self, box: HostSandbox) -> str:
        return "/tmp/entrypoint.log"

    # -- files ---------------------------------------------------------------------------------

    async def _transfer(
        self,
        box: HostSandbox,
        command: str,
        *,
        stdin_path: Path | None = None,
        stdout_path: Path | None = None,
    ) -> str | None:
        """Run a file-copying command inside the sandbox as its user; None, or why it failed."""
        done = await self._run(
            box,
            command,
            cwd=None,
            env=None,
            timeout_s=self._default_timeout_s,
            user=None,
            stdin_path=stdin_path,
            stdout_path=stdout_path,
        )
        if done.timed_out or done.return_code != 0:
            return done.stderr.decode(errors="replace").strip() or f"exit status {done.return_code}"
        return None

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None:
        """Write a host file into the sandbox (parents created), as the sandbox's user."""
        box: HostSandbox = handle.raw
        target = _inside_path(target_path, box.workdir)
        command = f"mkdir -p -- {shlex.quote(posixpath.dirname(target))} && cat > {shlex.quote(target)}"
        if not await asyncio.to_thread(source_path.is_file):
            raise FileNotFoundError(f"upload source {source_path} is not a file")
        detail = await self._transfer(box, command, stdin_path=source_path)
        if detail is not None:
            raise RuntimeError(f"upload to {target_path!r} in sandbox {box.sandbox_id} failed: {detail}")

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None:
        """Copy a sandbox file to the host (read inside the sandbox, so its symlinks stay inside)."""
        box: HostSandbox = handle.raw
        source = _inside_path(source_path, box.workdir)
        await asyncio.to_thread(target_path.parent.mkdir, parents=True, exist_ok=True)
        detail = await self._transfer(box, f"cat -- {shlex.quote(source)}", stdout_path=target_path)
        if detail is not None:
            await asyncio.to_thread(target_path.unlink, missing_ok=True)
            raise FileNotFoundError(
                f"download of {source_path!r} from sandbox {box.sandbox_id} failed: {detail}"
            )
