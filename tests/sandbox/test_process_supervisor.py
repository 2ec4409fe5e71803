"""process_supervisor.py, a standalone script: its receipt is written only after every
descendant, even a `setsid` one, is gone. The last test runs it as agents do: uploaded into a
sandbox and started there with the sandbox's own python3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nemo_gym.sandbox import AsyncSandbox, SandboxSpec, process_supervisor
from tests.sandbox.helpers import needs_bwrap, token, wait_gone

SCRIPT = Path(process_supervisor.__file__)


def supervise(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, dict]:
    receipt = tmp_path / "cleanup.json"
    done = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), "--cleanup-timeout", "2", "--receipt", str(receipt), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, json.loads(receipt.read_text())


def test_deadline_stops_the_command_and_all_descendants(tmp_path: Path) -> None:
    mark = token()
    script = f"setsid sleep {mark} & (sleep {mark} &) ; sleep {mark}"
    done, receipt = supervise(tmp_path, "--timeout", "1", "--", "bash", "-c", script)
    assert done.returncode == 0, done.stderr
    assert receipt == {"cleanup_confirmed": True, "return_code": -15, "error": None, "timed_out": True}
    assert wait_gone(mark, timeout_s=0.5) == []  # gone before the receipt was written
    assert not (tmp_path / "cleanup.json.partial").exists()


def test_a_command_that_finishes_reports_its_status(tmp_path: Path) -> None:
    done, receipt = supervise(tmp_path, "--timeout", "30", "--", "sh", "-c", "exit 3")
    assert done.returncode == 0
    assert receipt == {"cleanup_confirmed": True, "return_code": 3, "error": None, "timed_out": False}


def test_a_stop_file_present_at_start_runs_nothing(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    stop.touch()
    marker = tmp_path / "ran"
    done, receipt = supervise(
        tmp_path, "--timeout", "30", "--stop-file", str(stop), "--", "touch", str(marker)
    )
    assert receipt == {"cleanup_confirmed": True, "return_code": None, "error": None, "timed_out": False}
    assert not marker.exists()


def test_exec_timeout_leaves_room_for_cleanup() -> None:
    assert (
        process_supervisor.exec_timeout(timeout=100)
        == 100 + 3 * process_supervisor.DEFAULT_CLEANUP_TIMEOUT + 30
    )
    assert process_supervisor.exec_timeout(timeout=10, cleanup_timeout=1) == 43


@needs_bwrap
async def test_uploaded_into_an_isolated_sandbox(traversable_dir: Path) -> None:
    mark = token()
    async with AsyncSandbox({"isolated": {"workspace_root": str(traversable_dir)}}, SandboxSpec()) as sandbox:
        await sandbox.start()
        await sandbox.upload(SCRIPT, "/opt/runtime/process_supervisor.py")
        result = await sandbox.exec(
            "python3 -I /opt/runtime/process_supervisor.py --timeout 1 --cleanup-timeout 2 "
            f"--receipt /opt/runtime/cleanup.json -- sh -c 'setsid sleep {mark} & sleep {mark}'; "
            "cat /opt/runtime/cleanup.json",
            timeout_s=process_supervisor.exec_timeout(timeout=1, cleanup_timeout=2),
        )
        assert result.return_code == 0, result.stderr
        assert json.loads(result.stdout) == {
            "cleanup_confirmed": True,
            "return_code": -15,
            "error": None,
            "timed_out": True,
        }
    assert wait_gone(mark) == []
