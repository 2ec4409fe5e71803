"""`ng_reward_profile +rollouts_jsonl_fpath=results/run.jsonl [+materialized_inputs_jsonl_fpath=…]`.

Descriptive statistics of a run's rewards (and every other numeric field): per task, per agent and
per repeat, written next to the rollouts as NeMo Gym names those files:
`<stem>_reward_profiling.jsonl`, `<stem>_agent_metrics.json`, `<stem>_repeat_level_metrics.json`.

The inputs say how many rollouts each task should have: materialized rows (with `_ng_task_index` /
`_ng_rollout_index`) as they are, raw input rows as line N = task N, once per repeat seen in the
rollouts. Without inputs the rollouts are profiled as they are. A task with fewer rollouts than
expected is an error unless `+allow_partial_rollouts=true`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import ConfigError
from nemo_gym.reward_profile import RewardProfiler
from nemo_gym.rollouts.jsonl import read_complete_rows
from nemo_gym.rollouts.keys import AGENT_REF_KEY, ROLLOUT_KEY, TASK_KEY, done_key

COMMAND = "ng_reward_profile"
SUMMARY = "reward statistics of a run per task, per agent and per repeat, written next to its rollouts."


class RewardProfileKeys(CommandKeys):
    """ng_reward_profile's keys (NeMo Gym's names)."""

    rollouts_jsonl_fpath: str | None = Field(None, description="The run's rollouts JSONL. Required.")
    materialized_inputs_jsonl_fpath: str | None = Field(
        None,
        description="The rows the run was given (materialized or raw); default: the rollouts themselves.",
    )
    allow_partial_rollouts: bool = Field(False, description="Profile even when some rollouts are missing.")


KEYS = RewardProfileKeys


def _existing(path: str | None, key: str) -> Path:
    if not path:
        raise ConfigError(f"is required (+{key}=...)", key=key, source="command line")
    resolved = Path(path)
    if not resolved.is_file():
        raise ConfigError(f"file {resolved} does not exist", key=key, source="command line")
    return resolved


def expected_rows(inputs: list[dict[str, Any]] | None, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rollout the run should have produced (see the module docstring)."""
    if inputs is None:
        return [{**r, TASK_KEY: done_key(r)[0], ROLLOUT_KEY: done_key(r)[1]} for r in results]
    if all(TASK_KEY in row and ROLLOUT_KEY in row for row in inputs):
        return inputs
    repeats = sorted({done_key(r)[1] for r in results if done_key(r)[1] is not None}) or [0]
    agents = {done_key(r)[0]: r.get(AGENT_REF_KEY) for r in results}
    rows = []
    for task, row in enumerate(inputs):
        base = {**row, TASK_KEY: task}
        if AGENT_REF_KEY not in base and agents.get(task) is not None:
            base[AGENT_REF_KEY] = agents[task]
        rows += [{**base, ROLLOUT_KEY: repeat} for repeat in repeats]
    return rows


def write_profile(
    profiler: RewardProfiler,
    rollouts_path: Path,
    group_level: list[dict[str, Any]],
    agent_level: list[dict[str, Any]],
    repeat_level: list[dict[str, Any]],
) -> tuple[Path, Path, Path]:
    stem = rollouts_path.stem
    group_path = rollouts_path.with_name(f"{stem}_reward_profiling.jsonl")
    agent_path = rollouts_path.with_name(f"{stem}_agent_metrics.json")
    repeat_path = rollouts_path.with_name(f"{stem}_repeat_level_metrics.json")
    group_path.write_bytes(
        b"".join(orjson.dumps(row) + b"\n" for row in profiler.prepare_for_serialization(group_level))
    )
    agent_path.write_bytes(
        orjson.dumps(profiler.prepare_for_serialization(agent_level), option=orjson.OPT_INDENT_2)
    )
    repeat_path.write_bytes(
        orjson.dumps(profiler.prepare_for_serialization(repeat_level), option=orjson.OPT_INDENT_2)
    )
    return group_path, agent_path, repeat_path


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, RewardProfileKeys, args, config_names=False)
    rollouts_path = _existing(keys.rollouts_jsonl_fpath, "rollouts_jsonl_fpath")
    results = list(read_complete_rows(rollouts_path))
    inputs = None
    if keys.materialized_inputs_jsonl_fpath:
        inputs_path = _existing(keys.materialized_inputs_jsonl_fpath, "materialized_inputs_jsonl_fpath")
        inputs = list(read_complete_rows(inputs_path))
    rows = expected_rows(inputs, results)
    profiler = RewardProfiler()
    try:
        group_level, agent_level, repeat_level = profiler.profile_from_data(
            rows, results, allow_partial_rollouts=keys.allow_partial_rollouts
        )
    except ValueError as exc:
        raise ConfigError(
            f"{exc}; pass +allow_partial_rollouts=true to profile what is there",
            key="rollouts_jsonl_fpath",
            source="command line",
        ) from None
    paths = write_profile(profiler, rollouts_path, group_level, agent_level, repeat_level)
    done = sum(entry["num_rollouts"] for entry in group_level)
    print(f"Reward profile: {done}/{len(rows)} rollouts over {len(group_level)} tasks")
    for entry in agent_level:
        name = (entry.get(AGENT_REF_KEY) or {}).get("name")
        mean = entry.get("mean/reward")
        print(
            f"  {name}: mean reward {mean:.4f}" if isinstance(mean, float) else f"  {name}: no reward field"
        )
    print(f"Per task:   {paths[0]}\nPer agent:  {paths[1]}\nPer repeat: {paths[2]}")
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
