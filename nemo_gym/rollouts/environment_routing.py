"""Which server a rollout row goes to when the config declares environment servers, what it is
sent, and what is stored from the answer: NeMo Gym 0.7.0's routing, as pure functions.

An environment server instance (`name: {environment_servers: {impl: {...}}}`) fronts the agents
its config references (`agent_server`, or any field `{type: responses_api_agents, name: …}`).
A row is routed by, in order:
1. its task, when it is a materialized task (`task_id: {taskset, task_id}` + `task_input`): to
   the server `environment_server_routes[taskset]` names, sent as an episode request;
2. for a flat row, `environment_routing_mode`:
   - `agent` (default): to the one environment server fronting the row's agent, the row sent
     as it is; an agent no environment server fronts is called directly, as without
     environment servers (NeMo Gym generates a `legacy_agent` relay for it, which forwards the
     same `/run` one hop later); an agent several servers front is an error, since a row
     cannot choose;
   - `legacy`: to `environment_server_name`, the row as it is;
   - `taskset`: flat rows are refused.

An episode answer (`{episode_id, task_id, result | failure}`) becomes the stored record: the
result's own fields, or a failure-sidecar row. Every record names the environment server that
ran it (`_ng_environment_server`) and its implementation (`_ng_result_type`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.global_config import (
    AGENT_SERVER_REF_KEY_NAME,
    AGENT_SERVER_TYPE_KEY_NAME,
    ATTEMPT_INDEX_KEY_NAME,
    ENVIRONMENT_SERVER_STAMP_KEY_NAME,
    ENVIRONMENT_SERVER_TYPE_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    TASK_INDEX_KEY_NAME,
)
from nemo_gym.rollout_correlation import maybe_rollout_id_from_run_body
from nemo_gym.rollouts.trajectory import _episode_record

# The implementation name under `environment_servers:` of the server that produced a record.
NG_RESULT_TYPE_KEY = "_ng_result_type"
NG_ENVIRONMENT_SERVER_KEY = ENVIRONMENT_SERVER_STAMP_KEY_NAME

RoutingMode = Literal["agent", "legacy", "taskset"]


class AgentWithoutEnvironmentServerError(ValueError):
    """An agent that must be reached through an environment server has none."""


class AmbiguousEnvironmentServerError(ValueError):
    """Several environment servers front one agent, and a row routed by agent cannot choose."""


class EnvironmentRoutingConfig(BaseModel):
    """The collection keys that steer routing (NeMo Gym's names and defaults)."""

    model_config = ConfigDict(extra="ignore")

    environment_routing_mode: RoutingMode = "agent"
    environment_server_name: str | None = None
    environment_server_routes: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- the config's servers


def environment_server_agent_refs(server: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The agent references in one environment server's block: any field whose value is
    `{type: responses_api_agents, …}`, and `agent_server` even without a type."""
    return [
        reference
        for key, reference in server.items()
        if isinstance(reference, Mapping)
        and (
            reference.get("type") == AGENT_SERVER_TYPE_KEY_NAME
            or (key == AGENT_SERVER_REF_KEY_NAME and reference.get("type") is None)
        )
    ]


def environment_server_agent_names(server: Mapping[str, Any]) -> list[str]:
    return [str(ref["name"]) for ref in environment_server_agent_refs(server) if ref.get("name") is not None]


def _environment_blocks(global_config: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """`instance name → (implementation name, its block)` of every environment server."""
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for name, instance in global_config.items():
        if not isinstance(instance, Mapping):
            continue
        servers = instance.get(ENVIRONMENT_SERVER_TYPE_KEY_NAME)
        if not isinstance(servers, Mapping):
            continue
        for impl, block in servers.items():
            if isinstance(block, Mapping):
                found[str(name)] = (str(impl), block)
    return found


def _environment_servers_by_agent(global_config_dict: Mapping[str, Any]) -> dict[str, list[str]]:
    """`agent name → the environment servers that front it`, in config order."""
    servers_by_agent: dict[str, list[str]] = {}
    for name, (_, block) in _environment_blocks(global_config_dict).items():
        for agent in environment_server_agent_names(block):
            servers_by_agent.setdefault(agent, []).append(name)
    return servers_by_agent


def _environment_server_for_agent(agent_name: str, servers_by_agent: Mapping[str, list[str]]) -> str:
    """The one environment server fronting `agent_name` (an error for none, or several)."""
    servers = servers_by_agent.get(agent_name, [])
    if len(servers) == 1:
        return servers[0]
    if not servers:
        raise AgentWithoutEnvironmentServerError(f"agent {agent_name!r} has no environment server")
    raise AmbiguousEnvironmentServerError(
        f"agent {agent_name!r} is fronted by several environment servers: {sorted(servers)}; a row routed by "
        "its agent cannot choose. Set environment_routing_mode=legacy with environment_server_name, "
        "or route these rows by taskset (environment_server_routes)."
    )


# ---------------------------------------------------------------------------- rows


def _materialized_taskset(row: Mapping[str, Any]) -> str | None:
    """The taskset of a materialized-task row, else None (a flat row)."""
    task_id = row.get("task_id")
    if not isinstance(task_id, Mapping) or "task_input" not in row:
        return None
    taskset = task_id.get("taskset")
    return taskset if isinstance(taskset, str) and taskset else None


def _environment_server_for_config_row(row: Mapping[str, Any], config: Any) -> str | None:
    """The environment server a row goes to by the routing keys; None means "by its agent"."""
    taskset = _materialized_taskset(row)
    if taskset is not None:
        try:
            return config.environment_server_routes[taskset]
        except KeyError:
            raise ValueError(
                f"no environment server route for taskset {taskset!r}; set environment_server_routes.{taskset}"
            ) from None
    if config.environment_routing_mode == "agent":
        return None
    if config.environment_routing_mode == "legacy":
        return config.environment_server_name
    raise ValueError(
        "environment_routing_mode=taskset takes only materialized rows (task_id.taskset + task_input); "
        "use environment_routing_mode=agent to mix materialized and flat rows"
    )


def _episode_request_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The episode request of a materialized row: its rollout id (attempt kept apart) and task."""
    attempt = row.get(ATTEMPT_INDEX_KEY_NAME, 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise ValueError(f"{ATTEMPT_INDEX_KEY_NAME} must be a non-negative integer, not {attempt!r}")
    rollout_id = maybe_rollout_id_from_run_body({**row, ATTEMPT_INDEX_KEY_NAME: 0})
    if rollout_id is None:
        rollout_id = f"{row[TASK_INDEX_KEY_NAME]}-{row[ROLLOUT_INDEX_KEY_NAME]}"
    return {
        "episode_id": {"rollout_id": rollout_id, "attempt": attempt},
        "task": {"task_id": row["task_id"], "task_input": row["task_input"]},
    }


def _is_episode_response(result: Any) -> bool:
    """Whether an answer has the episode shape (identities plus `result` or `failure`)."""
    return (
        isinstance(result, Mapping)
        and isinstance(result.get("episode_id"), Mapping)
        and isinstance(result.get("task_id"), Mapping)
        and ("result" in result or "failure" in result)
    )


# ---------------------------------------------------------------------------- one run's routes


@dataclass(frozen=True)
class Dispatch:
    """Where one row goes (`server`, an environment server or, with `environment_server` None,
    the agent itself) and the body POSTed to its `/run`."""

    server: str
    body: dict[str, Any]
    environment_server: str | None = None
    environment_server_type: str | None = None


@dataclass
class EnvironmentRoutes:
    """The environment servers of one running config and the routing keys of one collection."""

    servers_by_agent: dict[str, list[str]] = field(default_factory=dict)
    server_types: dict[str, str] = field(default_factory=dict)
    config: EnvironmentRoutingConfig = field(default_factory=EnvironmentRoutingConfig)

    @classmethod
    def from_config(
        cls,
        global_config: Mapping[str, Any],
        routing: Mapping[str, Any] | EnvironmentRoutingConfig | None = None,
    ) -> EnvironmentRoutes:
        """Built once per collection; `routing` defaults to the routing keys of `global_config`."""
        blocks = _environment_blocks(global_config)
        if not isinstance(routing, EnvironmentRoutingConfig):
            routing = EnvironmentRoutingConfig.model_validate(
                dict(routing if routing is not None else global_config)
            )
        routes = cls(
            servers_by_agent=_environment_servers_by_agent(global_config),
            server_types={name: impl for name, (impl, _) in blocks.items()},
            config=routing,
        )
        routes._check(set(blocks))
        return routes

    def _check(self, declared: set[str]) -> None:
        named = set(self.config.environment_server_routes.values())
        if self.config.environment_server_name is not None:
            named.add(self.config.environment_server_name)
        unknown = sorted(named - declared)
        if unknown:
            raise ValueError(
                f"environment servers {unknown} are not in the running config "
                f"(declared: {', '.join(sorted(declared)) or 'none'})"
            )
        if self.config.environment_routing_mode == "legacy" and self.config.environment_server_name is None:
            raise ValueError("environment_routing_mode=legacy needs environment_server_name")

    @property
    def declared(self) -> bool:
        """Whether the config declares any environment server (else routing is the plain agent path)."""
        return bool(self.server_types)

    def dispatch(self, row: dict[str, Any], agent_name: str | None) -> Dispatch:
        """Where `row` goes and what it is sent (`agent_name`: the agent the row resolved to)."""
        server = _environment_server_for_config_row(row, self.config)
        if server is None and agent_name is not None and agent_name in self.servers_by_agent:
            server = _environment_server_for_agent(agent_name, self.servers_by_agent)
        if server is None:
            if agent_name is None:
                raise AgentWithoutEnvironmentServerError(
                    "the row names no agent and no environment server routes it"
                )
            return Dispatch(server=agent_name, body=row)
        body = _episode_request_body(row) if _materialized_taskset(row) is not None else row
        return Dispatch(
            server=server,
            body=body,
            environment_server=server,
            environment_server_type=self.server_types.get(server),
        )


def record_from_answer(row: Mapping[str, Any], answer: dict[str, Any], dispatch: Dispatch) -> dict[str, Any]:
    """The record stored for one answered dispatch (the answer itself on the plain agent path)."""
    if dispatch.environment_server is None:
        return answer
    record = (
        _episode_record(answer)
        if _materialized_taskset(row) is not None and _is_episode_response(answer)
        else answer
    )
    record[NG_ENVIRONMENT_SERVER_KEY] = dispatch.environment_server
    if dispatch.environment_server_type is not None:
        record[NG_RESULT_TYPE_KEY] = dispatch.environment_server_type
    return record


__all__ = [
    "NG_ENVIRONMENT_SERVER_KEY",
    "NG_RESULT_TYPE_KEY",
    "AgentWithoutEnvironmentServerError",
    "AmbiguousEnvironmentServerError",
    "Dispatch",
    "EnvironmentRoutes",
    "EnvironmentRoutingConfig",
    "_environment_server_for_agent",
    "_environment_server_for_config_row",
    "_environment_servers_by_agent",
    "_episode_request_body",
    "_is_episode_response",
    "_materialized_taskset",
    "environment_server_agent_names",
    "environment_server_agent_refs",
    "record_from_answer",
]
