"""Input rows → the rollouts to run: routing, repeats, indices, request overrides. Pure: no I/O.

One row becomes one rollout per (target agent, repeat). Precedence for the agent, as NeMo Gym
0.7.0 has it: `agent_map[<row's agent_ref.name>]` > `agent_map._default` (which `+agent_name`
sets) > the row's own `agent_ref`; `fan_out[<routing name>]` runs the row once per listed agent.
Each rollout carries `_ng_task_index` (the caller's, else one per distinct row) and
`_ng_rollout_index` (0, 1, … per task), so resuming can tell what is done.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from nemo_gym.rollouts.keys import AGENT_REF_KEY, ROLLOUT_KEY, TASK_KEY, agent_ref_name

DEFAULT_KEY = "_default"
AGENT_TYPE = "responses_api_agents"


@dataclass(frozen=True)
class ExpansionPlan:
    """How rows become rollouts (the run-level keys of ng_collect_rollouts / RolloutCollectionConfig)."""

    agent_map: Mapping[str, str] = field(default_factory=dict)
    fan_out: Mapping[str, Sequence[str]] = field(default_factory=dict)
    num_repeats: int | Mapping[str, int] = 1
    num_repeats_add_seed: bool = False
    responses_create_params: Mapping[str, Any] = field(default_factory=dict)
    interleave_repeats: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_repeats, int):
            if self.num_repeats < 1:
                raise ValueError(f"num_repeats must be >= 1, got {self.num_repeats}")
        else:
            bad = {k: v for k, v in self.num_repeats.items() if not isinstance(v, int) or v < 1}
            if bad:
                raise ValueError(f"num_repeats values must be integers >= 1, got {bad}")
        for key, agents in self.fan_out.items():
            if not agents:
                raise ValueError(f"fan_out[{key!r}] lists no agent, so its rows would never run")
            if len(set(agents)) != len(agents):
                raise ValueError(f"fan_out[{key!r}] lists an agent twice; use num_repeats to repeat")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `base`, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _repeats_for(plan: ExpansionPlan, keys: Sequence[str]) -> int | None:
    if isinstance(plan.num_repeats, int):
        return plan.num_repeats
    for key in keys:
        if key in plan.num_repeats:
            return plan.num_repeats[key]
    return plan.num_repeats.get(DEFAULT_KEY)


def _with_seed(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """A per-rollout `seed` through `metadata.extra_body`, which vLLM model servers honour."""
    metadata = dict(params.get("metadata") or {})
    extra = json.loads(metadata.get("extra_body") or "{}")
    extra["seed"] = seed
    metadata["extra_body"] = json.dumps(extra)
    return {**params, "metadata": metadata}


def _targets(row: dict[str, Any], plan: ExpansionPlan) -> tuple[str | None, list[str] | None]:
    """(the name that routes the row, the agents it goes to); None when nothing names an agent."""
    own = agent_ref_name(row)
    mapped = plan.agent_map.get(own) if own is not None else None
    agent = mapped or plan.agent_map.get(DEFAULT_KEY) or own
    routing_name = own or agent
    if routing_name is not None and routing_name in plan.fan_out:
        return routing_name, list(plan.fan_out[routing_name])
    return routing_name, [agent] if agent is not None else None


def _rollout(row: dict[str, Any], target: str, index: int, plan: ExpansionPlan) -> dict[str, Any]:
    rollout = dict(row)
    if agent_ref_name(rollout) != target:
        rollout[AGENT_REF_KEY] = {"type": AGENT_TYPE, "name": target}
    rollout[ROLLOUT_KEY] = index
    if plan.num_repeats_add_seed:
        rollout["responses_create_params"] = _with_seed(
            dict(rollout.get("responses_create_params") or {}), index
        )
    return rollout


def expand_rows(rows: Sequence[Mapping[str, Any]], plan: ExpansionPlan) -> list[dict[str, Any]]:
    """The rollouts for `rows` under `plan`; input rows are never mutated.

    Raises ValueError naming the rows no agent can be found for, and the routing names a
    dict-form `num_repeats` has no entry for.
    """
    task_of_content: dict[bytes, int] = {}
    next_rollout: Counter[Any] = Counter()
    unrouted: list[int] = []
    no_repeats: set[str] = set()
    out: list[dict[str, Any]] = []
    for position, source in enumerate(rows):
        row = dict(source)
        routing_name, targets = _targets(row, plan)
        if targets is None:
            unrouted.append(position)
            continue
        if plan.responses_create_params:
            row["responses_create_params"] = deep_merge(
                row.get("responses_create_params") or {}, plan.responses_create_params
            )
        if TASK_KEY not in row:
            content = orjson.dumps(source, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
            row[TASK_KEY] = task_of_content.setdefault(content, len(task_of_content))
        for target in targets:
            keys = [k for k in dict.fromkeys((target, routing_name)) if k is not None]
            repeats = _repeats_for(plan, keys)
            if repeats is None:
                no_repeats.add(" / ".join(keys))
                continue
            for _ in range(repeats):
                out.append(_rollout(row, target, next_rollout[row[TASK_KEY]], plan))
                next_rollout[row[TASK_KEY]] += 1
    if unrouted:
        shown = ", ".join(str(i) for i in unrouted[:10]) + (" …" if len(unrouted) > 10 else "")
        raise ValueError(
            f"no agent for rows {shown}: give agent_name (or agent_map with a '_default' entry), "
            "or an agent_ref {type: responses_api_agents, name: …} in every row"
        )
    if no_repeats:
        raise ValueError(
            f"num_repeats has no entry for {sorted(no_repeats)} and no '_default'; "
            f"it lists {sorted(k for k in plan.num_repeats if k != DEFAULT_KEY)}"  # type: ignore[union-attr]
        )
    if plan.interleave_repeats:
        out.sort(key=lambda r: r[ROLLOUT_KEY])  # stable: each round keeps the input order
    return out
