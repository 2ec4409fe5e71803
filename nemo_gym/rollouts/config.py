"""The keys of a rollout collection run: `ng_collect_rollouts`' command keys and NeMo Gym's
`RolloutCollectionConfig`, one model (its field descriptions are the command's `--help`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nemo_gym.config.command_keys import ConfigCommandKeys
from nemo_gym.rollouts.examples import DEFAULT_KEY, ExpansionPlan
from nemo_gym.rollouts.keys import aggregate_metrics_path_for, failures_path_for

DEFAULT_CONCURRENCY = 32


class RolloutCollectionConfig(ConfigCommandKeys):
    """ng_collect_rollouts' keys, NeMo Gym 0.7.0's names plus our aliases."""

    agent_name: str | None = Field(
        None, description="Agent instance to send every row to; without it, each row's agent_ref routes it."
    )
    input_jsonl_fpath: str | None = Field(
        None, description="Input JSONL; each row has responses_create_params plus any extra keys. Required."
    )
    output_jsonl_fpath: str | None = Field(
        None, description="Output JSONL, appended as each rollout finishes. Required."
    )
    limit: int | None = Field(None, ge=0, description="Use only the first N input rows.")
    num_repeats: int | dict[str, int] = Field(
        1,
        description="Rollouts per input row, or a dict of them keyed by agent (or the row's agent_ref name), "
        "with '_default' for the rest.",
    )
    num_repeats_add_seed: bool = Field(
        False,
        description="Give each repeat its rollout index as `seed` (metadata.extra_body, honoured by vLLM).",
    )
    num_samples_in_parallel: int | None = Field(
        None, ge=1, description="Most rollouts in flight at once (NeMo Gym's name for concurrency)."
    )
    concurrency: int | None = Field(None, ge=1, description="Alias of num_samples_in_parallel; default 32.")
    max_resident_rollout_tasks: int | None = Field(
        None, ge=1, description="Most rollouts admitted at once (default: the concurrency)."
    )
    responses_create_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Responses fields merged into every row's request (e.g. temperature).",
    )
    resume_from_cache: bool = Field(
        False, description="Skip rollouts already in the output; without it an existing output is cleared."
    )
    resume: bool = Field(False, description="Alias of resume_from_cache.")
    max_failures: int | None = Field(
        None, ge=0, description="Exit non-zero when more rollouts than this fail (default: only if all fail)."
    )
    agent_map: dict[str, str] = Field(
        default_factory=dict,
        description="Re-route rows by their agent_ref name ({old: new}); key _default applies to every other row.",
    )
    fan_out: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Run each row whose agent_ref name is a key once per listed agent ({name: [agent, ...]}).",
    )
    interleave_repeats: bool = Field(
        False,
        description="Start repeats round by round (abcabc) instead of each row's back to back (aabbcc).",
    )
    disable_aggregation: bool = Field(
        False, description="Write no aggregate-metrics file and call no /aggregate_metrics (sharded runs)."
    )
    require_complete: bool = Field(False, description="Exit non-zero if any rollout is missing (failed).")
    route_failures_to_sidecar: bool = Field(
        True,
        description="Write a failed rollout to <output stem>_failures.jsonl and go on (false: stop at the first).",
    )
    dispatch_budget_s: float | None = Field(
        None,
        ge=0,
        description="Start no rollout later than this many seconds into the run (the rest resume).",
    )
    drain_margin_s: float | None = Field(
        None,
        ge=0,
        description="With dispatch_budget_s: stop starting rollouts this long before the budget ends.",
    )
    rollout_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Fail a rollout whose /run takes longer than this (default: no limit of its own).",
    )
    environment_routing_mode: Literal["agent", "legacy", "taskset"] | None = Field(
        None,
        description="How rows reach environment servers: by their agent's (agent), all to "
        "environment_server_name (legacy), or materialized rows only (taskset). Default: the config's, else agent.",
    )
    environment_server_name: str | None = Field(
        None, description="The environment server for every row (legacy)."
    )
    environment_server_routes: dict[str, str] | None = Field(
        None, description="Environment servers keyed by a materialized row's taskset."
    )
    retain_results_in_memory: bool = Field(
        True,
        description="run_from_config returns the finished rows (false: an empty list; they are on disk).",
    )

    @field_validator("num_repeats", mode="before")
    @classmethod
    def _null_is_one(cls, value: Any) -> Any:
        return 1 if value is None else value

    @field_validator("num_repeats")
    @classmethod
    def _at_least_one(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        counts = [value] if isinstance(value, int) else list(value.values())
        if any(n < 1 for n in counts):
            raise ValueError("Input should be greater than or equal to 1")
        return value

    @model_validator(mode="after")
    def _checked(self) -> RolloutCollectionConfig:
        self.expansion_plan()  # raises with the reason (an empty or repeating fan_out)
        if self.agent_name and self.agent_map.get(DEFAULT_KEY) not in (None, self.agent_name):
            raise ValueError(
                f"agent_name={self.agent_name!r} conflicts with agent_map._default={self.agent_map[DEFAULT_KEY]!r}"
            )
        return self

    @property
    def parallel(self) -> int:
        return self.concurrency or self.num_samples_in_parallel or DEFAULT_CONCURRENCY

    @property
    def resuming(self) -> bool:
        return self.resume_from_cache or self.resume

    @property
    def input_path(self) -> Path:
        return Path(str(self.input_jsonl_fpath))

    @property
    def output_path(self) -> Path:
        return Path(str(self.output_jsonl_fpath))

    @property
    def failures_path(self) -> Path:
        return failures_path_for(self.output_path)

    @property
    def metrics_path(self) -> Path:
        return aggregate_metrics_path_for(self.output_path)

    def routing(self, global_config: dict[str, Any]) -> dict[str, Any]:
        """The routing keys: this run's, else the running config's."""
        keys = ("environment_routing_mode", "environment_server_name", "environment_server_routes")
        mine = {key: getattr(self, key) for key in keys if getattr(self, key) is not None}
        return {**{key: global_config[key] for key in keys if global_config.get(key) is not None}, **mine}

    def expansion_plan(self) -> ExpansionPlan:
        """agent_map[ref] > agent_map._default > agent_name > the row's own agent_ref."""
        agent_map = dict(self.agent_map)
        if self.agent_name and DEFAULT_KEY not in agent_map:
            agent_map[DEFAULT_KEY] = self.agent_name
        return ExpansionPlan(
            agent_map=agent_map,
            fan_out=self.fan_out,
            num_repeats=self.num_repeats,
            num_repeats_add_seed=self.num_repeats_add_seed,
            responses_create_params=self.responses_create_params,
            interleave_repeats=self.interleave_repeats,
        )
