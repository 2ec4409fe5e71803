"""AsyncSandbox's lifecycle rules, independent of the provider behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nemo_gym.sandbox import AsyncSandbox, SandboxSpec, SandboxStatus, create_provider


@pytest.fixture
def local(tmp_path: Path) -> dict:
    return {"local": {"workspace_root": str(tmp_path)}}


async def test_lifecycle_errors(local: dict) -> None:
    sandbox = AsyncSandbox(local)
    assert await sandbox.status() == SandboxStatus.UNKNOWN
    with pytest.raises(ValueError, match=r"start\(\) needs a SandboxSpec"):
        await sandbox.start()
    with pytest.raises(RuntimeError, match=r"the sandbox is not running: call start\(\) first"):
        await sandbox.exec("true")
    await sandbox.start(SandboxSpec())
    with pytest.raises(RuntimeError, match="already started"):
        await sandbox.start(SandboxSpec())
    with pytest.raises(RuntimeError, match=r"disconnect\(\) is for sandboxes obtained with connect\(\)"):
        await sandbox.disconnect()
    await sandbox.stop()
    await sandbox.stop()  # idempotent
    with pytest.raises(RuntimeError, match="this sandbox was stopped"):
        await sandbox.start(SandboxSpec())
    with pytest.raises(NotImplementedError, match="'local' does not support PTY sessions"):
        await AsyncSandbox(local).pty.create()


async def test_failing_setup_stops_the_sandbox(local: dict, tmp_path: Path) -> None:
    sandbox = AsyncSandbox(local, SandboxSpec())

    async def setup(box: AsyncSandbox) -> None:
        await box.exec("echo partial > partial.txt")
        raise RuntimeError("setup failed")

    with pytest.raises(RuntimeError, match="setup failed"):
        await sandbox.start_with_setup(None, setup)
    assert await sandbox.status() == SandboxStatus.STOPPED
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_shared_provider_is_not_closed_by_its_sandboxes(local: dict) -> None:
    provider = create_provider(local)
    first = AsyncSandbox(provider, SandboxSpec(workdir=None), owns_provider=False)
    second = AsyncSandbox(provider, SandboxSpec(), owns_provider=False)
    await first.start()
    await second.start()
    assert first.sandbox_id != second.sandbox_id
    await first.exec("echo one > f")
    assert (await second.exec("cat f")).return_code == 1  # separate working directories
    await first.stop()
    assert (await second.exec("echo alive")).stdout == "alive\n"
    await second.stop()


async def test_endpoint_validation(local: dict) -> None:
    async with AsyncSandbox(local, SandboxSpec(ports=[7000])) as sandbox:
        await sandbox.start()
        with pytest.raises(ValueError, match=r"an integer in 1..65535, got True"):
            await sandbox.endpoint(True)
        with pytest.raises(ValueError, match=r"port 7001 is not declared"):
            await sandbox.endpoint(7001)
