"""Row keys and side-file names shared with NeMo Gym 0.7.0, so its tools read our outputs as theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK_KEY = "_ng_task_index"
ROLLOUT_KEY = "_ng_rollout_index"
# Outputs written before we adopted NeMo Gym's names; resume must still recognise them.
LEGACY_TASK_KEY = "_ng_row_index"
LEGACY_ROLLOUT_KEY = "_ng_repeat_index"
FAILURE_CLASS_KEY = "_ng_failure_class"
FAILURE_MESSAGE_KEY = "_ng_failure_message"
AGENT_REF_KEY = "agent_ref"


def failures_path_for(output: Path) -> Path:
    """`out/rollouts.jsonl` → `out/rollouts_failures.jsonl`."""
    return output.with_name(f"{output.stem}_failures.jsonl")


def aggregate_metrics_path_for(output: Path) -> Path:
    """`out/rollouts.jsonl` → `out/rollouts_aggregate_metrics.json`."""
    return output.with_name(f"{output.stem}_aggregate_metrics.json")


def done_key(row: dict[str, Any]) -> tuple[Any, Any]:
    """(task, rollout) of a finished row, whichever generation of key names wrote it."""
    task = row.get(TASK_KEY, row.get(LEGACY_TASK_KEY))
    rollout = row.get(ROLLOUT_KEY, row.get(LEGACY_ROLLOUT_KEY))
    return task, rollout


def agent_ref_name(row: dict[str, Any]) -> str | None:
    """The agent an input row asks for (`agent_ref: {type, name}`), if it names one."""
    ref = row.get(AGENT_REF_KEY)
    if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
        return ref["name"]
    return None
