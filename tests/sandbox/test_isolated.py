"""The `isolated` provider: code inside cannot read the host's files or reach the host's
network, while ordinary work (python3, files in its own tree) does; all its processes die
with the command."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_gym.sandbox import AsyncSandbox, SandboxProviderUnavailableError, SandboxSpec, create_provider
from tests.sandbox.helpers import appear, needs_bwrap, token, wait_gone

pytestmark = needs_bwrap


@pytest.fixture
def isolated(traversable_dir: Path) -> dict:
    return {"isolated": {"workspace_root": str(traversable_dir / "boxes")}}


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("host secret\n")
    return secret


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's 127.0.0.1 that records what any client sends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                received.append(connection.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


async def test_python_and_its_own_files_work(isolated: dict) -> None:
    async with AsyncSandbox(isolated, SandboxSpec(workdir="/testbed", env={"LEVEL": "7"})) as sandbox:
        await sandbox.start()
        result = await sandbox.exec(
            "python3 -c 'import sys; print(sum(range(101)), sys.version_info.major)' > sum.txt && "
            "mkdir -p /tmp/t && echo tmp-ok > /tmp/t/x && cat sum.txt /tmp/t/x && pwd && echo $LEVEL $HOME"
        )
        assert (result.stdout, result.stderr, result.return_code) == (
            "5050 3\ntmp-ok\n/testbed\n7 /root\n",
            "",
            0,
        )
        # The tree persists between commands of one sandbox.
        again = await sandbox.exec("cat /testbed/sum.txt /tmp/t/x; id -u")
        assert again.stdout == "5050 3\ntmp-ok\n0\n"


async def test_reading_a_host_file_outside_the_sandbox_fails(isolated: dict, host_secret: Path) -> None:
    async with AsyncSandbox(isolated, SandboxSpec()) as sandbox:
        await sandbox.start()
        result = await sandbox.exec(f"cat {host_secret}")
        assert result.return_code == 1
        assert result.stdout == ""
        assert result.stderr == f"cat: {host_secret}: No such file or directory\n"
        # Nor through the repository, the host's home, /proc of host processes, or python.
        listing = await sandbox.exec("ls /; test -e /work || echo no-work; test -e /home || echo no-home")
        visible = listing.stdout.split()
        assert visible[-2:] == ["no-work", "no-home"]
        assert {"etc", "proc", "root", "tmp", "usr", "var", "workspace"} <= set(visible)
        assert set(visible[:-2]) <= {
            "bin",
            "dev",
            "etc",
            "lib",
            "lib32",
            "lib64",
            "libx32",
            "proc",
            "root",
            "sbin",
        } | {
            "tmp",
            "usr",
            "var",
            "workspace",
        }
        # Only the sandbox's own processes exist in its /proc (the host has many more).
        pids = await sandbox.exec("ls /proc | grep -c '^[0-9]'")
        assert int(pids.stdout) <= 5
        sneaky = await sandbox.exec(f"python3 -c 'print(open(\"{host_secret}\").read())'")
        assert sneaky.return_code == 1
        assert "FileNotFoundError" in sneaky.stderr
        # A symlink the code plants resolves inside the sandbox, also when the server downloads it.
        await sandbox.exec(f"ln -s {host_secret} link")
        with pytest.raises(FileNotFoundError, match="No such file or directory"):
            await sandbox.download("link", host_secret.parent / "leak.txt")
        assert not (host_secret.parent / "leak.txt").exists()


async def test_system_directories_are_read_only(isolated: dict) -> None:
    async with AsyncSandbox(isolated, SandboxSpec()) as sandbox:
        await sandbox.start()
        result = await sandbox.exec(
            "touch /usr/bin/planted; mount -o remount,rw /usr 2>&1 | head -1; echo $?"
        )
        assert "touch: cannot touch '/usr/bin/planted': Read-only file system" in result.stderr
        assert not await asyncio.to_thread(os.path.exists, "/usr/bin/planted")
        caps = await sandbox.exec("grep CapEff /proc/self/status")
        assert caps.stdout == "CapEff:\t0000000000000000\n"


async def test_a_loopback_server_on_the_host_is_unreachable(isolated: dict, loopback_server) -> None:
    port, received = loopback_server
    # The server is reachable from the host itself...
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"from-host")
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.02)
    assert received == [b"from-host"]
    async with AsyncSandbox(isolated, SandboxSpec()) as sandbox:
        await sandbox.start()
        probe = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'from-sandbox')\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print(type(e).__name__)\n"
        )
        (Path(sandbox._handle.raw.directory) / "rootfs" / "workspace" / "probe.py").write_text(probe)
        result = await sandbox.exec("python3 probe.py")
        assert result.stdout == "ConnectionRefusedError\n"
        outside = await sandbox.exec(
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\""
        )
        assert "OSError: [Errno 101] Network is unreachable" in outside.stderr
    assert received == [b"from-host"]


async def test_timeout_kills_processes_that_left_the_group(isolated: dict) -> None:
    mark = token()
    async with AsyncSandbox(isolated, SandboxSpec()) as sandbox:
        await sandbox.start()
        task = asyncio.create_task(
            sandbox.exec(
                f"setsid sleep {mark} & nohup sleep {mark} >/dev/null 2>&1 & sleep {mark}", timeout_s=2
            )
        )
        assert len(await appear(mark, 3)) >= 3
        result = await task
        assert (result.error_type, result.return_code) == ("timeout", 125)
        assert wait_gone(mark) == []
        # A command's leftovers end with the command, even without a timeout.
        await sandbox.exec(f"setsid sleep {mark} >/dev/null 2>&1 &")
        assert wait_gone(mark) == []


async def test_limits_and_file_round_trip(isolated: dict, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4000
    (tmp_path / "in.bin").write_bytes(payload)
    async with AsyncSandbox(isolated, SandboxSpec(resources={"memory_mib": 256, "cpu": 1})) as sandbox:
        await sandbox.start()
        await sandbox.upload(tmp_path / "in.bin", "/opt/data/in.bin")
        copied = await sandbox.exec("cp /opt/data/in.bin out.bin && wc -c < out.bin && nproc")
        assert copied.stdout == f"{len(payload)}\n1\n"
        await sandbox.download("/workspace/out.bin", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == payload
        over = await sandbox.exec("python3 -c 'bytearray(512 * 1024 * 1024)'")
        assert over.return_code == 1
        assert over.stderr.strip().endswith("MemoryError")


async def test_connect_and_user_switch(isolated: dict) -> None:
    async with AsyncSandbox(isolated, SandboxSpec()) as owner:
        await owner.start()
        await owner.exec("echo shared > /workspace/note")
        borrower = await AsyncSandbox.connect(await owner.serialize(), provider=create_provider(isolated))
        assert (await borrower.exec("cat note; id -u", user=1000)).stdout == "shared\n1000\n"
        assert (await borrower.exec("id -un", user="root")).stdout == "root\n"
        with pytest.raises(ValueError, match="no user 'alice' in the isolated sandbox's /etc/passwd"):
            await borrower.exec("id", user="alice")
        await borrower.disconnect()


async def test_missing_bwrap_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(SandboxProviderUnavailableError) as caught:
        create_provider({"isolated": {"bwrap": str(tmp_path / "no-bwrap")}})
    assert "needs bubblewrap" in str(caught.value)
    assert "apt-get install bubblewrap" in str(caught.value)


async def test_bad_workdir_and_entrypoint_are_refused(isolated: dict) -> None:
    with pytest.raises(Exception, match=r"workdir '/usr/src' must not be / or under"):
        await AsyncSandbox(isolated, SandboxSpec(workdir="/usr/src")).start()
    with pytest.raises(Exception, match="spec.entrypoint cannot run as a lasting service"):
        await AsyncSandbox(isolated, SandboxSpec(entrypoint=["sleep", "1"])).start()
    root = Path(isolated["isolated"]["workspace_root"])
    assert await asyncio.to_thread(lambda: list(root.iterdir()) if root.exists() else []) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the host-user switch applies to a server running as root")
async def test_a_root_server_runs_commands_as_a_host_user_that_owns_nothing(traversable_dir: Path) -> None:
    secret = traversable_dir / "root-only.txt"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    config = {"isolated": {"workspace_root": str(traversable_dir / "boxes"), "ro_binds": [str(secret)]}}
    async with AsyncSandbox(config, SandboxSpec()) as sandbox:
        await sandbox.start()
        # Even a file bound in on purpose stays unreadable: inside is root only in name.
        result = await sandbox.exec(f"id -u; cat {secret}")
        assert result.stdout == "0\n"
        assert result.stderr == f"cat: {secret}: Permission denied\n"
        owner = await sandbox.exec("echo mine > mine.txt && stat -c %u mine.txt")
        assert owner.stdout == "0\n"
        host_file = Path(sandbox._handle.raw.directory) / "rootfs" / "workspace" / "mine.txt"
        assert (host_file.stat().st_uid, host_file.read_text()) == (65534, "mine\n")


async def test_an_unreachable_workspace_root_is_explained(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root server switches to a host user that may not enter the root")
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    with pytest.raises(Exception, match=r"which sandboxed commands \(host uid 65534\) cannot enter"):
        await AsyncSandbox({"isolated": {"workspace_root": str(hidden / "boxes")}}, SandboxSpec()).start()
    keep_root = {"isolated": {"workspace_root": str(hidden / "boxes"), "host_uid": 0}}
    async with AsyncSandbox(keep_root, SandboxSpec()) as sandbox:
        await sandbox.start()
        assert (await sandbox.exec("id -u")).stdout == "0\n"
