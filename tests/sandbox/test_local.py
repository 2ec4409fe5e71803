"""The `local` provider: exact output, limits, timeouts that reap the whole process group,
file round trips, and a sandbox shared between provider instances (as between processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from nemo_gym.sandbox import AsyncSandbox, Sandbox, SandboxSpec, SandboxStatus, create_provider
from nemo_gym.sandbox.providers import _process
from tests.sandbox.helpers import appear, token, wait_gone


@pytest.fixture
def local(tmp_path: Path) -> dict:
    return {"local": {"workspace_root": str(tmp_path / "boxes")}}


async def test_runs_a_command_and_returns_exact_output(local: dict) -> None:
    async with AsyncSandbox(local, SandboxSpec(env={"GREETING": "hello"})) as sandbox:
        await sandbox.start()
        result = await sandbox.exec("echo $GREETING; printf 'to stderr' >&2; exit 3", env={"X": "1"})
        assert (result.stdout, result.stderr, result.return_code, result.error_type) == (
            "hello\n",
            "to stderr",
            3,
            None,
        )
        cwd = await sandbox.exec("pwd; echo $X", env={"X": "y"})
        assert cwd.stdout == f"{Path(sandbox._handle.raw.workdir)}\ny\n"
        assert Path(sandbox._handle.raw.workdir).parent.parent == Path(local["local"]["workspace_root"])
        assert await sandbox.status() == SandboxStatus.RUNNING
    assert await sandbox.status() == SandboxStatus.STOPPED
    assert not await asyncio.to_thread(os.path.exists, sandbox._handle.raw.directory)


async def test_timeout_kills_and_reaps_the_whole_process_group(local: dict) -> None:
    mark = token()
    async with AsyncSandbox(local, SandboxSpec()) as sandbox:
        await sandbox.start()
        command = f"sleep {mark} & sleep {mark} & echo started; sleep {mark}"
        task = asyncio.create_task(sandbox.exec(command, timeout_s=1.5))
        assert len(await appear(mark, 3)) >= 3
        result = await task
        assert result.error_type == "timeout"
        assert result.return_code == 125
        assert result.stdout == "started\n"
        assert "timed out after 1.5s" in result.stderr
        assert wait_gone(mark) == []
        assert sandbox._handle.raw.groups == set()
        assert all(not _process.group_alive(pgid) for pgid in _process._LIVE_GROUPS)


async def test_cancelled_exec_kills_its_group(local: dict) -> None:
    mark = token()
    async with AsyncSandbox(local, SandboxSpec()) as sandbox:
        await sandbox.start()
        task = asyncio.create_task(sandbox.exec(f"sleep {mark}", timeout_s=60))
        assert await appear(mark)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wait_gone(mark) == []


async def test_background_processes_live_until_the_sandbox_closes(local: dict) -> None:
    mark = token()
    sandbox = AsyncSandbox(local, SandboxSpec())
    await sandbox.start()
    result = await sandbox.exec(f"nohup sleep {mark} >/dev/null 2>&1 &")
    assert result.return_code == 0
    assert len(await appear(mark)) == 1
    assert len(sandbox._handle.raw.groups) == 1
    await sandbox.stop()
    assert wait_gone(mark) == []


def test_groups_left_at_interpreter_exit_are_killed(tmp_path: Path) -> None:
    mark = token()
    script = textwrap.dedent(
        f"""
        import asyncio
        from nemo_gym.sandbox import AsyncSandbox, SandboxSpec
        async def main():
            sandbox = AsyncSandbox({{"local": {{"workspace_root": {str(tmp_path)!r}}}}}, SandboxSpec())
            await sandbox.start()
            result = await sandbox.exec("nohup sleep {mark} >/dev/null 2>&1 &")
            print(result.return_code, flush=True)
        asyncio.run(main())  # exits without stopping the sandbox
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout == "0\n", done.stderr
    assert wait_gone(mark) == []


async def test_memory_limit_is_enforced(local: dict) -> None:
    async with AsyncSandbox(local, SandboxSpec(resources={"memory_mib": 256})) as sandbox:
        await sandbox.start()
        over = await sandbox.exec("python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'")
        assert over.return_code == 1
        assert over.stderr.strip().endswith("MemoryError")
        under = await sandbox.exec("python3 -c 'b = bytearray(64 * 1024 * 1024); print(len(b))'")
        assert (under.stdout, under.return_code) == ("67108864\n", 0)


async def test_cpu_limits_pin_cpus_and_cap_cpu_time(tmp_path: Path) -> None:
    config = {"local": {"workspace_root": str(tmp_path), "cpu_time_limit_s": 1}}
    async with AsyncSandbox(config, SandboxSpec(resources={"cpu": 1})) as sandbox:
        await sandbox.start()
        pinned = await sandbox.exec("python3 -c 'import os; print(len(os.sched_getaffinity(0)))'")
        assert pinned.stdout == "1\n"
        busy = await sandbox.exec("python3 -c 'while True: pass'", timeout_s=30)
        # RLIMIT_CPU: SIGXCPU (24) at one CPU-second; the shell reports 128 + 24.
        assert (busy.return_code, busy.error_type) == (152, None)


async def test_upload_download_round_trip_and_spec_files(local: dict, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    spec = SandboxSpec(files={"notes/readme.txt": "written at start\n"})
    async with AsyncSandbox(local, spec) as sandbox:
        await sandbox.start()
        await sandbox.upload(source, "in/deep/payload.bin")
        check = await sandbox.exec("wc -c < in/deep/payload.bin; cat notes/readme.txt")
        assert check.stdout == f"{len(payload)}\nwritten at start\n"
        await sandbox.exec("cp in/deep/payload.bin out.bin")
        await sandbox.download("out.bin", tmp_path / "back" / "out.bin")
    assert (tmp_path / "back" / "out.bin").read_bytes() == payload


async def test_a_second_provider_connects_by_id(local: dict) -> None:
    owner = AsyncSandbox(local, SandboxSpec(env={"SHARED": "yes"}))
    await owner.start()
    await owner.exec("echo from-owner > note.txt")
    descriptor = await owner.serialize()
    assert descriptor == {"sandbox_id": owner._handle.sandbox_id, "workdir": None}
    borrower = await AsyncSandbox.connect(descriptor, provider=create_provider(local))
    result = await borrower.exec("cat note.txt; echo $SHARED")
    assert result.stdout == "from-owner\nyes\n"
    await borrower.disconnect()
    assert (await owner.exec("cat note.txt")).stdout == "from-owner\n"
    await owner.stop()
    with pytest.raises(Exception, match="no 'local' sandbox"):
        await AsyncSandbox.connect(descriptor, provider=create_provider(local))
    with pytest.raises(Exception, match="is not a 'local' sandbox id"):
        await AsyncSandbox.connect({"sandbox_id": "../../etc"}, provider=create_provider(local))


async def test_user_switch_and_output_cap(tmp_path: Path) -> None:
    config = {"local": {"workspace_root": str(tmp_path), "max_output_bytes": 10}}
    async with AsyncSandbox(config, SandboxSpec()) as sandbox:
        await sandbox.start()
        with pytest.raises(ValueError, match="cannot switch to user='nobody-else'"):
            await sandbox.exec("id", user="nobody-else")
        same = await sandbox.exec("echo 0123456789abcdef", user=os.getuid())
        assert same.stdout == "0123456789"
        assert "7 bytes of output beyond max_output_bytes were dropped" in same.stderr


def test_sync_sandbox(local: dict, tmp_path: Path) -> None:
    with Sandbox(local).start(SandboxSpec(workdir=str(tmp_path / "mine"))) as sandbox:
        assert sandbox.exec("pwd").stdout == f"{tmp_path / 'mine'}\n"
        sandbox.exec("echo kept > kept.txt")
        assert sandbox.status() == SandboxStatus.RUNNING
    assert sandbox.status() == SandboxStatus.STOPPED
    # A caller-supplied workdir is the caller's: closing leaves it.
    assert (tmp_path / "mine" / "kept.txt").read_text() == "kept\n"
    assert not [t for t in threading.enumerate() if t.name == "nemo-gym-sandbox-loop"]


async def test_sync_sandbox_refuses_to_block_a_running_loop(local: dict) -> None:
    with pytest.raises(
        RuntimeError, match=r"Sandbox.__init__\(\) blocks; inside async code use AsyncSandbox"
    ):
        Sandbox(local)
    assert not [t for t in threading.enumerate() if t.name == "nemo-gym-sandbox-loop"]


async def test_declared_port_endpoint(local: dict) -> None:
    async with AsyncSandbox(local, SandboxSpec(ports=[8123])) as sandbox:
        await sandbox.start()
        assert (await sandbox.endpoint(8123)).endpoint == "http://127.0.0.1:8123"
        with pytest.raises(
            ValueError, match=r"port 9000 is not declared in SandboxSpec.ports \(declared: \[8123\]\)"
        ):
            await sandbox.endpoint(9000)


async def test_entrypoint_runs_as_a_service_until_stop(local: dict) -> None:
    mark = token()
    sandbox = AsyncSandbox(local, SandboxSpec(entrypoint=["sh", "-c", f"echo serving; exec sleep {mark}"]))
    await sandbox.start()
    assert len(await appear(mark)) == 1
    log = Path(sandbox._handle.raw.directory) / "entrypoint.log"
    for _ in range(100):
        if await asyncio.to_thread(log.exists) and await asyncio.to_thread(log.read_text):
            break
        await asyncio.sleep(0.02)
    assert await asyncio.to_thread(log.read_text) == "serving\n"
    await sandbox.stop()
    assert wait_gone(mark) == []
    broken = AsyncSandbox(local, SandboxSpec(entrypoint=["sh", "-c", "exit 0"], workdir="/proc/forbidden"))
    with pytest.raises(OSError):
        await broken.start()
    root = Path(local["local"]["workspace_root"])
    assert [p.name for p in await asyncio.to_thread(lambda: list(root.iterdir()))] == []
