"""The docker provider. Unit tests drive it against a stand-in `docker` CLI (fixtures/
fake_docker.py) and check the commands it issues and how it reads the answers; the end-to-end
test needs a real Docker daemon and is skipped, saying so, where there is none."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.sandbox import (
    AsyncSandbox,
    SandboxCreateVerificationError,
    SandboxProviderUnavailableError,
    SandboxSpec,
    SandboxStatus,
    create_provider,
)
from nemo_gym.sandbox.providers.docker import DockerProvider
from nemo_gym.sandbox.providers.docker.provider import DockerProvider as _Provider

FAKE = Path(__file__).parent / "fixtures" / "fake_docker.py"


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    binary = tmp_path / "docker"
    binary.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    binary.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(tmp_path / "containers"))
    monkeypatch.setattr(_Provider, "_daemon", {})
    return {"docker": {"binary": str(binary), "exec": {"exec_shell": "sh"}, "probe": {"deadline_s": 5}}}, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def argvs(log: Path, command: str) -> list[list[str]]:
    return [c["argv"] for c in calls(log) if c["argv"][0] == command]


async def test_create_exec_and_close_issue_the_right_commands(
    fake_docker: tuple[dict, Path], tmp_path: Path
) -> None:
    config, log = fake_docker
    config["docker"]["create"] = {"network": "none", "pids_limit": 64}
    spec = SandboxSpec(
        image="docker://python:3.12-slim",
        workdir=str(tmp_path),
        env={"SECRET_TOKEN": "hunter2"},
        resources={"cpu": 1.5, "memory_mib": 256},
        ports=[8080],
    )
    async with AsyncSandbox(config, spec) as sandbox:
        await sandbox.start()
        name = sandbox._handle.sandbox_id
        [run] = argvs(log, "run")
        assert run[:6] == ["run", "-d", "--name", name, "--label", "nemo-gym.sandbox=1"]
        assert run[6:] == [
            "--init",
            "-w",
            str(tmp_path),
            "--env",
            "SECRET_TOKEN",
            "--cpus",
            "1.5",
            "--memory",
            "256m",
            "--memory-swap",
            "256m",
            "--network",
            "none",
            "--pids-limit",
            "64",
            "--publish",
            "127.0.0.1::8080/tcp",
            "--entrypoint",
            "/bin/sh",
            "python:3.12-slim",
            "-c",
            "while :; do sleep 2147483647; done",
        ]
        result = await sandbox.exec("echo $SECRET_TOKEN; pwd; echo oops >&2; exit 4")
        assert (result.stdout, result.stderr, result.return_code) == (f"hunter2\n{tmp_path}\n", "oops\n", 4)
        assert all("hunter2" not in " ".join(c["argv"]) for c in calls(log))  # values travel in env only
        as_root = await sandbox.exec("true", user="root", cwd="/")
        assert as_root.return_code == 0
        assert argvs(log, "exec")[-1][:8] == [
            "exec",
            "-w",
            "/",
            "--env",
            "SECRET_TOKEN",
            "--env",
            "NEMO_GYM_SANDBOX_EXEC",
            "--user",
        ]
        assert (await sandbox.endpoint(8080)).endpoint == "http://127.0.0.1:49153"
        assert await sandbox.status() == SandboxStatus.RUNNING
        await sandbox.pause()
        assert await sandbox.status() == SandboxStatus.PAUSED
        paused = await sandbox.exec("true")
        assert (paused.return_code, paused.error_type) == (125, "sandbox")
        await sandbox.resume()
    assert argvs(log, "rm")[-1] == ["rm", "-f", name]
    assert await sandbox.status() == SandboxStatus.STOPPED


async def test_files_connect_and_timeouts(fake_docker: tuple[dict, Path], tmp_path: Path) -> None:
    config, log = fake_docker
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x00payload\xff" * 100)
    async with AsyncSandbox(config, SandboxSpec(image="alpine", workdir=str(tmp_path))) as sandbox:
        await sandbox.start()
        await sandbox.upload(source, "sub/copied.bin")
        assert argvs(log, "cp")[-1] == [
            "cp",
            str(source),
            f"{sandbox._handle.sandbox_id}:{tmp_path}/sub/copied.bin",
        ]
        await sandbox.download(f"{tmp_path}/sub/copied.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
        with pytest.raises(FileNotFoundError, match="docker cp of '/nonexistent' failed"):
            await sandbox.download("/nonexistent", tmp_path / "x")

        borrowed = await AsyncSandbox.connect(await sandbox.serialize(), provider=create_provider(config))
        assert (await borrowed.exec("pwd")).stdout == f"{tmp_path}\n"
        await borrowed.disconnect()

        slow = await sandbox.exec("sleep 30", timeout_s=1)
        assert (slow.error_type, slow.return_code) == ("timeout", 125)
        kill = argvs(log, "exec")[-1]
        assert kill[:5] == ["exec", "--user", "0", sandbox._handle.sandbox_id, "sh"]
        assert "NEMO_GYM_SANDBOX_EXEC=" in kill[-1]


async def test_failing_probe_removes_the_container(fake_docker: tuple[dict, Path], monkeypatch) -> None:
    config, log = fake_docker
    config["docker"]["probe"] = {"deadline_s": None}
    monkeypatch.setenv("FAKE_DOCKER_PROBE_FAILS", "1")
    with pytest.raises(SandboxCreateVerificationError, match="failed its readiness probe"):
        await AsyncSandbox(config, SandboxSpec(image="alpine")).start()
    [run], [rm] = argvs(log, "run"), argvs(log, "rm")
    assert rm == ["rm", "-f", run[3]]


async def test_unreachable_daemon_and_missing_cli(fake_docker: tuple[dict, Path], monkeypatch) -> None:
    config, _ = fake_docker
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    with pytest.raises(
        SandboxProviderUnavailableError,
        match="cannot reach a Docker daemon .*Cannot connect to the Docker daemon",
    ):
        await AsyncSandbox(config, SandboxSpec(image="alpine")).start()
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        SandboxProviderUnavailableError, match="needs the `docker` CLI on PATH and a running Docker daemon"
    ):
        create_provider({"docker": {}})


def _daemon_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no `docker` CLI on PATH (and so no Docker daemon to test against)"
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer `docker version` within 20s"
    if done.returncode != 0:
        return f"no reachable Docker daemon: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return None


@pytest.mark.e2e
@pytest.mark.skipif(_daemon_reason() is not None, reason=str(_daemon_reason()))
async def test_real_daemon_end_to_end(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("round trip\n")
    async with AsyncSandbox(
        {"docker": {}}, SandboxSpec(image="alpine:3.20", workdir="/work", resources={"memory_mib": 128})
    ) as sandbox:
        await sandbox.start()
        assert (await sandbox.exec("echo hi; pwd")).stdout == "hi\n/work\n"
        await sandbox.upload(source, "/work/in.txt")
        await sandbox.download("/work/in.txt", tmp_path / "out.txt")
        assert (tmp_path / "out.txt").read_text() == "round trip\n"
        timed = await sandbox.exec("sleep 60", timeout_s=1)
        assert timed.error_type == "timeout"
        await asyncio.sleep(0.5)
        assert "sleep 60" not in (await sandbox.exec("ps -o args")).stdout
    assert isinstance(sandbox._provider, DockerProvider)
    assert await sandbox.status() == SandboxStatus.STOPPED
