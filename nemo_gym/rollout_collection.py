"""NeMo Gym's in-process rollout API, as RL trainers import it.

    rch = RolloutCollectionHelper()
    for task in rch.run_examples(examples=rows, head_server_config=BaseServerConfig(host=..., port=...)):
        row, result = await task      # row keeps the caller's own fields (`_rowidx`)

`run_examples` is the lower-level call (rows are dispatched as given); `preprocess_examples`
applies the run-level routing and repeats first when a caller wants them; `run_from_config` is
what `ng_collect_rollouts` runs. All three go through `nemo_gym.rollouts.dispatch`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, PrivateAttr

from nemo_gym.http.server_client import ServerClient
from nemo_gym.rollouts.collect import RolloutCollector
from nemo_gym.rollouts.config import RolloutCollectionConfig
from nemo_gym.rollouts.dispatch import (
    CANCELLED,
    BoundedCompletions,
    DispatchOptions,
    DrainTracker,
    RolloutRunError,
    dispatch,
)
from nemo_gym.rollouts.environment_routing import (
    NG_ENVIRONMENT_SERVER_KEY,
    NG_RESULT_TYPE_KEY,
    EnvironmentRoutes,
    _environment_server_for_agent,
    _environment_servers_by_agent,
    _episode_request_body,
    _is_episode_response,
    _materialized_taskset,
)
from nemo_gym.rollouts.examples import ExpansionPlan, expand_rows
from nemo_gym.rollouts.jsonl import read_complete_rows
from nemo_gym.rollouts.keys import agent_ref_name
from nemo_gym.rollouts.resume_records import (  # noqa: F401 (NeMo Gym's names, re-exported)
    get_max_rollout_attempts,
    migrate_invalid_judge_main_rows,
    observed_elapsed,
)
from nemo_gym.rollouts.trajectory import (
    NG_AGENT_OBSERVATIONS_KEY,
    NG_DISPATCH_DRAINED_KEY,
    NG_FAILURE_CLASS_KEY,
    NG_MODEL_CALL_CAPTURE_KEY,
    NG_NO_PERSIST_KEY,
    NG_PERF_KEY,
    NG_TASK_ID_KEY,
    NG_TERMINAL_KEY,
    NG_TRAJECTORY_KEY,
    _attach_ng_perf,
    _attach_trajectory_record,
    _build_ng_perf,
    _build_trajectory_record,
    _episode_record,
    _trajectory_identity,
    is_terminal_failure,
)

DispatchLatencyTracker = DrainTracker  # NeMo Gym's name
SharedRolloutCollectionConfig = RolloutCollectionConfig  # NeMo Gym's base of its collection configs
_get_max_rollout_attempts = get_max_rollout_attempts  # NeMo Gym's older name


def _head_key(head_server_config: Any) -> tuple[str, int] | None:
    if head_server_config is None:
        return None
    if isinstance(head_server_config, BaseModel):
        head_server_config = head_server_config.model_dump()
    return str(head_server_config.get("host")), int(head_server_config.get("port"))


class RolloutCollectionHelper(BaseModel):
    """Runs rollouts through the agents of a running set of servers (found via the head server)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _clients: dict[Any, ServerClient] = PrivateAttr(default_factory=dict)

    def setup_server_client(self, head_server_config: Any = None) -> ServerClient:
        """A client for the servers behind `head_server_config`, fetched once per head server."""
        key = _head_key(head_server_config)
        client = self._clients.get(key)
        if client is None:
            client = ServerClient.load_from_global_config(head_server_config)
            self._clients[key] = client
        return client

    def preprocess_examples(
        self,
        examples: list[dict[str, Any]],
        *,
        agent_map: dict[str, str] | None = None,
        fan_out: dict[str, list[str]] | None = None,
        num_repeats: int | dict[str, int] = 1,
        num_repeats_add_seed: bool = False,
        global_config_dict: DictConfig | dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The rollouts for `examples` with routing and repeats applied (copies; inputs untouched).

        Each gets `_ng_task_index` (one per distinct row, unless the row has one) and
        `_ng_rollout_index`. With `global_config_dict`, every agent is checked to exist.
        """
        plan = ExpansionPlan(
            agent_map=agent_map or {},
            fan_out=fan_out or {},
            num_repeats=num_repeats,
            num_repeats_add_seed=num_repeats_add_seed,
        )
        rows = expand_rows(examples, plan)
        if global_config_dict is not None:
            if isinstance(global_config_dict, DictConfig):
                global_config_dict = OmegaConf.to_container(global_config_dict, resolve=True)  # type: ignore[assignment]
            _check_agents(rows, ServerClient(global_config_dict))
        return rows

    def run_examples(
        self,
        examples: list[dict[str, Any]],
        head_server_config: Any = None,
        semaphore: asyncio.Semaphore | None = None,
        route_failures_to_sidecar: bool = False,
        environment_server_name: str | None = None,
        *,
        max_resident_tasks: int | None = None,
        dispatch_budget_s: float | None = None,
        drain_margin_s: float | None = None,
        latency_tracker: DrainTracker | None = None,
        rollout_timeout_s: float | None = None,
    ) -> Iterator[Any]:
        """Awaitables resolving to `(row, result)` in completion order, one per row, rows as given.

        - `semaphore` bounds concurrent `/run` calls; `max_resident_tasks` bounds admitted
          rollouts (a new one starts only as a finished one is taken). Without either, every row
          starts once the first awaitable is awaited.
        - A failed `/run` raises (`RolloutRunError` with `.status`, `ServerCallTimeout` or
          `ServerUnreachable`; all pickle); with `route_failures_to_sidecar` it resolves to a
          failure row (`_ng_failure_class`, `_ng_failure_message`, `_ng_failure_http_status`).
        - `dispatch_budget_s` stops starting rows that long after the first start, and
          `drain_margin_s` sooner for rows that would not finish; such a row resolves to a result
          with `_ng_failure_class: cancelled` and `_ng_no_persist`.
        - `latency_tracker` (a `DispatchLatencyTracker`) carries what rollouts took across calls,
          for the drain margin.
        - `rollout_timeout_s` fails a `/run` that takes longer (default: `server_call_timeout_seconds`
          between answer bytes).
        Every row must name an agent (`agent_ref.name`) that the running config has; otherwise a
        ValueError says which rows and which agents exist, before anything starts.
        """
        client = self.setup_server_client(head_server_config)
        routing = {"environment_routing_mode": "legacy", "environment_server_name": environment_server_name}
        routes = EnvironmentRoutes.from_config(
            client.global_config, routing if environment_server_name is not None else None
        )
        _check_agents(examples, client, routes)
        options = DispatchOptions(
            routes=routes,
            semaphore=semaphore,
            route_failures_to_sidecar=route_failures_to_sidecar,
            max_resident_tasks=max_resident_tasks,
            dispatch_budget_s=dispatch_budget_s,
            drain_margin_s=drain_margin_s,
            rollout_timeout_s=rollout_timeout_s,
            tracker=latency_tracker,
        )
        return dispatch(examples, client, options)

    async def run_from_config(self, config: RolloutCollectionConfig | dict[str, Any]) -> list[dict[str, Any]]:
        """Run a collection as `ng_collect_rollouts` does; returns the output rows (see
        `retain_results_in_memory`)."""
        if not isinstance(config, RolloutCollectionConfig):
            config = RolloutCollectionConfig.model_validate(config)
        client = self.setup_server_client(config.head_server)
        collector = RolloutCollector(config, client)
        await collector.collect()
        if not config.retain_results_in_memory:
            return []
        return list(read_complete_rows(config.output_path))


def _check_agents(
    rows: list[dict[str, Any]], client: ServerClient, routes: EnvironmentRoutes | None = None
) -> None:
    """Every row can be routed: it names a running agent, or an environment server takes it."""
    known = set(client.server_names())
    routed_by_environment = (
        routes is not None and routes.declared and routes.config.environment_routing_mode != "agent"
    )
    rows = [row for row in rows if not routed_by_environment and _materialized_taskset(row) is None]
    missing_ref = [i for i, row in enumerate(rows) if agent_ref_name(row) is None]
    if missing_ref:
        shown = ", ".join(map(str, missing_ref[:10])) + (" …" if len(missing_ref) > 10 else "")
        raise ValueError(f"rows {shown} have no agent_ref name; every row must name the agent to run it")
    unknown = sorted({name for row in rows if (name := agent_ref_name(row)) not in known})  # type: ignore[misc]
    if unknown:
        raise ValueError(
            f"rows name agents the running servers do not have: {unknown}; known: {sorted(known)}"
        )


__all__ = [
    "CANCELLED",
    "NG_AGENT_OBSERVATIONS_KEY",
    "NG_ENVIRONMENT_SERVER_KEY",
    "NG_MODEL_CALL_CAPTURE_KEY",
    "NG_PERF_KEY",
    "NG_RESULT_TYPE_KEY",
    "NG_TASK_ID_KEY",
    "NG_TERMINAL_KEY",
    "NG_TRAJECTORY_KEY",
    "_attach_ng_perf",
    "_attach_trajectory_record",
    "_build_ng_perf",
    "_build_trajectory_record",
    "_environment_server_for_agent",
    "_environment_servers_by_agent",
    "_episode_record",
    "_episode_request_body",
    "_is_episode_response",
    "_materialized_taskset",
    "_trajectory_identity",
    "is_terminal_failure",
    "NG_DISPATCH_DRAINED_KEY",
    "NG_FAILURE_CLASS_KEY",
    "NG_NO_PERSIST_KEY",
    "BoundedCompletions",
    "DispatchLatencyTracker",
    "RolloutCollectionConfig",
    "RolloutCollectionHelper",
    "RolloutRunError",
    "SharedRolloutCollectionConfig",
    "get_max_rollout_attempts",
    "is_terminal_failure",
    "migrate_invalid_judge_main_rows",
    "observed_elapsed",
]
