"""Helpers NeMo Gym 0.7.0's `nemo_gym.rollout_collection` offers for resuming and retrying runs,
which environments (gdpval, …) import: the attempt cap, a rollout's observed wall time, and moving
rows that an old verifier scored with an unparseable judge answer into the failures sidecar.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.global_config import ATTEMPT_INDEX_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rollouts.keys import FAILURE_CLASS_KEY, failures_path_for
from nemo_gym.rollouts.trajectory import NG_TERMINAL_KEY

MAX_ROLLOUT_ATTEMPTS_VAR = "NEMO_GYM_MAX_ROLLOUT_ATTEMPTS"
DEFAULT_MAX_ROLLOUT_ATTEMPTS = 3
NG_ELAPSED_KEY = "elapsed_seconds"
JUDGE_INVALID_FAILURE_CLASS = "judge_invalid"
MIGRATED_INVALID_JUDGE_KEY = "_ng_migrated_invalid_judge_response"


def get_max_rollout_attempts() -> int:
    """How often one rollout may be attempted: NEMO_GYM_MAX_ROLLOUT_ATTEMPTS, else the default.

    A value that is not a positive integer is reported and the default used, so a typo in the
    environment never stops a run."""
    raw = os.environ.get(MAX_ROLLOUT_ATTEMPTS_VAR, "")
    if not raw:
        return DEFAULT_MAX_ROLLOUT_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value >= 1:
        return value
    print(
        f"warning: {MAX_ROLLOUT_ATTEMPTS_VAR}={raw!r} is not a positive integer; "
        f"using {DEFAULT_MAX_ROLLOUT_ATTEMPTS}",
        file=sys.stderr,
    )
    return DEFAULT_MAX_ROLLOUT_ATTEMPTS


def observed_elapsed(record: Mapping[str, Any]) -> float | None:
    """A rollout's wall time in seconds, from the record or its response's metadata, if positive."""
    response = record.get("response")
    metadata = response.get("metadata") if isinstance(response, Mapping) else None
    for value in (record.get(NG_ELAPSED_KEY), (metadata or {}).get(NG_ELAPSED_KEY)):
        try:
            seconds = float(value) if value is not None else 0.0
        except (TypeError, ValueError):
            continue
        if seconds > 0:
            return seconds
    return None


def _attempt_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        int(row.get("stage_index") or 0),
        row.get(TASK_INDEX_KEY_NAME),
        row.get(ROLLOUT_INDEX_KEY_NAME),
        int(row.get(ATTEMPT_INDEX_KEY_NAME) or 0),
    )


def migrate_invalid_judge_main_rows(output_fpath: Path) -> int:
    """Move rows marked `invalid_judge_response` from a run's output into its failures sidecar.

    Such rows were once written as zero-reward successes, which both skews the metrics and stops a
    resumed run from retrying them. Each moves at most once (a marker in the sidecar records it),
    the sidecar is made durable before the output is rewritten, and the output is replaced
    atomically, so a crash never loses a row. Returns how many invalid rows the output held.
    """
    output_fpath = Path(output_fpath)
    if not output_fpath.exists():
        return 0
    lines = [line.strip() for line in output_fpath.read_bytes().splitlines() if line.strip()]
    rows = [orjson.loads(line) for line in lines]
    invalid = [row for row in rows if row.get("invalid_judge_response")]
    if not invalid:
        return 0
    sidecar = failures_path_for(output_fpath)
    moved = {
        _attempt_key(row)
        for row in (
            orjson.loads(line) for line in (sidecar.read_bytes().splitlines() if sidecar.exists() else [])
        )
        if isinstance(row, dict) and row.get(MIGRATED_INVALID_JUDGE_KEY)
    }
    with sidecar.open("ab") as handle:
        for row in invalid:
            if _attempt_key(row) in moved:
                continue
            record = {**row, MIGRATED_INVALID_JUDGE_KEY: True}
            record[FAILURE_CLASS_KEY] = record.get(FAILURE_CLASS_KEY) or JUDGE_INVALID_FAILURE_CLASS
            record.pop(NG_TERMINAL_KEY, None)
            handle.write(orjson.dumps(record) + b"\n")
            moved.add(_attempt_key(row))
        handle.flush()
        os.fsync(handle.fileno())
    kept = [line for line, row in zip(lines, rows, strict=True) if not row.get("invalid_judge_response")]
    mode = output_fpath.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(dir=output_fpath.parent, prefix=f".{output_fpath.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(b"".join(line + b"\n" for line in kept))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, output_fpath)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return len(invalid)
