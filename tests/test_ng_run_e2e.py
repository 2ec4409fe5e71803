"""`ng_run` as a real process: readiness, ServerClient by name, clean shutdown, child death."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from nemo_gym.http.server_client import close_shared_client
from nemo_gym.server_utils import ServerClient
from nemo_gym.testing.processes import children_of, ng_run, pid_alive

pytestmark = pytest.mark.e2e
ECHO = str(Path(__file__).parent / "servers" / "echo_app.py")
SECRET = "sk-e2e-DISTINCTIVE-9f8e7d"


def two_servers(tmp_path: Path) -> str:
    path = tmp_path / "two.yaml"
    path.write_text(
        f"echo_a:\n  resources_servers:\n    echo:\n      entrypoint: {ECHO}\n      greeting: a-${{name_suffix}}\n      api_key: {SECRET}\n"
        f"echo_b:\n  resources_servers:\n    echo:\n      entrypoint: {ECHO}\n      greeting: b\n"
        "name_suffix: one\n"
    )
    return f"+config_paths=[{path}]"


def test_start_health_serverclient_and_sigint(tmp_path: Path) -> None:
    with ng_run(two_servers(tmp_path)) as run:
        instances = run.instances()
        assert [(i["name"], i["status"]) for i in instances] == [("echo_a", "ready"), ("echo_b", "ready")]
        for inst in instances:
            assert httpx.get(inst["url"] + "/health").json() == {"status": "ok"}
        assert "All 2 servers ready" in run.output
        pids = children_of(run.proc.pid)
        assert {i["pid"] for i in instances} <= pids

        client = ServerClient.load_from_global_config({"host": "127.0.0.1", "port": run.head_port})

        async def call() -> dict:
            try:
                response = await client.post(
                    server_name="echo_a", url_path="/call_peer", json={"peer": "echo_b", "text": "hi"}
                )
                return await response.json()
            finally:
                await close_shared_client()

        answer = asyncio.run(call())
        assert answer["peer_answer"]["greeting"] == "b" and answer["peer_answer"]["text"] == "hi"
        assert SECRET not in httpx.get(f"http://127.0.0.1:{run.head_port}/global_config_dict_yaml").text

        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if pid_alive(p)]
        assert "All servers stopped." in run.output
        assert SECRET not in run.output


def test_child_death_is_reported_and_ng_run_exits_nonzero(tmp_path: Path) -> None:
    with ng_run(two_servers(tmp_path)) as run:
        victim = next(i for i in run.instances() if i["name"] == "echo_b")
        os.kill(victim["pid"], signal.SIGKILL)
        assert run.proc.wait(timeout=30) == 1
        assert "error: server 'echo_b' (resources_servers/echo" in run.output
        assert "exited with code -9" in run.output
    assert not children_of(run.proc.pid)


def test_server_failing_at_startup_is_named_with_log_tail(tmp_path: Path) -> None:
    bad_cfg = tmp_path / "bad2.yaml"
    bad_cfg.write_text(
        f"echo_bad:\n  resources_servers:\n    echo:\n      entrypoint: {ECHO}\n      greeting: [not, a, string]\n"
    )
    with pytest.raises(RuntimeError) as info:
        with ng_run(f"+config_paths=[{bad_cfg}]", timeout=30):
            pass
    text = str(info.value)
    assert "ng_run exited with 1" in text
    assert "error: server 'echo_bad' (resources_servers/echo) exited with code 2 during startup" in text
    assert f"config key 'echo_bad.resources_servers.echo.greeting' (from {bad_cfg})" in text


def test_ng_run_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    with ng_run(two_servers(tmp_path)) as run:
        pids = {i["pid"] for i in run.instances()}
        run.proc.kill()
        run.proc.wait()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if pid_alive(p)]


def test_ng_status_and_ng_test(tmp_path: Path) -> None:
    import subprocess
    import sys

    from nemo_gym.config import PROJECT_ROOT

    env = dict(os.environ, NEMO_GYM_ENV_YAML="none")
    with ng_run(two_servers(tmp_path)) as run:
        status = subprocess.run(
            [sys.executable, "-m", "nemo_gym.cli.ng_status", f"+head_server.port={run.head_port}"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].split() == ["name", "implementation", "url", "pid", "health"]
        assert [line.split()[0] for line in lines[2:4]] == ["echo_a", "echo_b"] and all(
            line.endswith("healthy") for line in lines[2:4]
        )
        assert lines[-1] == "2/2 healthy"
    down = subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.ng_status", f"+head_server.port={run.head_port}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (
        down.returncode == 1
        and f"cannot reach the head server at http://127.0.0.1:{run.head_port}" in down.stderr
    )

    ok = subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.ng_test", "+entrypoint=resources_servers/simple_weather", "-q"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    assert ok.returncode == 0 and "passed" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.ng_test", "+entrypoint=resources_servers/nope"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    assert (
        bad.returncode == 2
        and "config key 'entrypoint' (from command line): has no tests folder" in bad.stderr
    )


def test_per_instance_log_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with ng_run(two_servers(tmp_path), f"+log_dir={logs}") as run:
        assert f"echo_a: logging to {logs / 'echo_a.log'}" in run.output
        assert "[echo_a]" not in run.output  # not prefixed into ng_run's output
    assert "Application startup complete." in (logs / "echo_a.log").read_text()
    assert "Application startup complete." in (logs / "echo_b.log").read_text()
