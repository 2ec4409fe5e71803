"""Turn a flat dataset row into a materialized task (`task_id` + `task_input`), the input shape
environment servers take, without changing the source file."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import JsonValue

from nemo_gym.episode_types import TaskId
from nemo_gym.global_config import (
    AGENT_REF_KEY_NAME,
    SKILLS_REF_KEY_NAME,
    TASK_INDEX_KEY_NAME,
    TASK_SOURCE_KEY_NAME,
)

# Routing keys are the collector's business, not the task's.
_ROUTING_KEYS = frozenset({AGENT_REF_KEY_NAME, TASK_SOURCE_KEY_NAME, SKILLS_REF_KEY_NAME})


def materialize_task(
    row: Mapping[str, JsonValue], *, taskset: str, task_index: int | None = None
) -> dict[str, JsonValue]:
    """`{task_id: {taskset, task_id}, task_input: <row without routing and _ng_ keys>}`.

    The task id is the row's `task_id`, `problem_id` or `instance_id`; without one, its
    `_ng_task_index` or the given `task_index` (a position, so it shifts when datasets are
    added or reordered, but not when prompt text is edited).
    """
    if "task_input" in row or isinstance(row.get("task_id"), Mapping):
        raise ValueError("this row is already a materialized task; materialize_task takes flat rows")
    task_id = next(
        (str(row[key]) for key in ("task_id", "problem_id", "instance_id") if row.get(key) is not None),
        None,
    )
    if task_id is None:
        index = row.get(TASK_INDEX_KEY_NAME, task_index)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(
                "a row without task_id, problem_id or instance_id needs a non-negative task_index"
            )
        task_id = str(index)
    return {
        "task_id": TaskId(taskset=taskset, task_id=task_id).model_dump(mode="json"),
        "task_input": {
            key: value
            for key, value in row.items()
            if key not in _ROUTING_KEYS and not key.startswith("_ng_")
        },
    }


__all__ = ["materialize_task"]
