"""Base for agents: `/v1/responses` (the agent loop), `/run` (seed → loop → verify),
`/aggregate_metrics`, and the episode-session routes environment servers drive.

As for resources servers, the routes are bound methods, so an agent's own annotations on
`responses(self, request, response, body)` and `run(self, request, body)` decide what
FastAPI validates and injects.

Episode sessions: an environment server seeds an agent session (`POST /v1/agent_sessions`,
with the tool and sandbox grants of the episode), calls `/ng-rollout/<id>/v1/responses` one or
more times with the session cookie, and closes it (`POST /v1/agent_sessions/close`), getting
back what the agent observed. Seeds and closes are idempotent under the caller's id: a retried
seed reuses the session, a retried close replays its answer for
`session_close_retry_window_seconds`, and a seed after a close is refused. An agent supports
sessions by implementing `_seed_agent_session_state` and `_close_agent_session_state`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, ClassVar

from fastapi import Body, FastAPI, HTTPException, Request
from pydantic import Field, PrivateAttr

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyResponse, SandboxAccess
from nemo_gym.config_types import (
    ROLLOUT_PATH_PREFIX,
    TOKEN_CAPTURE_PATH_SEGMENT,
    AggregateMetrics,
    AggregateMetricsRequest,
)
from nemo_gym.episode_types import ClosedModel, EpisodeId, TaskId
from nemo_gym.exceptions import APIError
from nemo_gym.global_config import (
    OBSERVABILITY_ENABLED_KEY_NAME,
    TOKEN_ID_CAPTURE_BLOCK,
    get_first_server_config_dict,
)
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.reward_profile import AggregateMetricsMixin
from nemo_gym.rollout_correlation import maybe_rollout_id_from_run_body
from nemo_gym.rollout_observability import AgentObservationBundle
from nemo_gym.server.base import NEMO_GYM_VALIDATION_STATUS, BaseServerConfig, SimpleServer
from nemo_gym.server_utils import apply_rollout_prefix, rollout_path_prefix
from nemo_gym.tool_access import ToolAccess, ToolAccessList

# The key of `request.session` that binds a caller's cookie to one agent session.
AGENT_SESSION_COOKIE_KEY = "agent_session_id"


class AgentSeedSessionRequest(ClosedModel):
    """Create the agent session `agent_session_id` for one episode, with the episode's grants."""

    agent_session_id: str = Field(min_length=1)
    episode_id: EpisodeId
    task_id: TaskId
    tool_accesses: ToolAccessList = Field(default_factory=list)
    sandbox_access: SandboxAccess | None = None


class AgentSeedSessionResponse(ClosedModel):
    agent_session_id: str


class AgentCloseSessionRequest(ClosedModel):
    agent_session_id: str
    episode_id: EpisodeId


class AgentCloseSessionResponse(ClosedModel):
    """The closed session, what the agent observed in it, and the resources cookies it ended with."""

    agent_session_id: str
    agent_observations: AgentObservationBundle | None = None
    resources_cookies: dict[str, str] | None = None


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    skip_verification: bool = False
    skip_verification_reward: float = 0.0
    # How long a close answer is kept for retries; it must cover the caller's retry horizon.
    session_close_retry_window_seconds: float = Field(default=300, gt=0, allow_inf_nan=False)
    # Whether this agent's rollouts take part in training token capture (NeMo Gym's key).
    token_id_capture: bool = False
    # Tool grants every session starts with; a session's own grants replace these by name.
    tool_accesses: ToolAccessList = Field(default_factory=list)


class BaseResponsesAPIAgent(SimpleServer):
    config: BaseResponsesAPIAgentConfig
    validation_status: ClassVar[int] = NEMO_GYM_VALIDATION_STATUS


@dataclass
class AgentSessionState:
    """An agent's state for one session; `request` is the seed it was created from."""

    request: AgentSeedSessionRequest


class AgentSessionSetupError(Exception):
    """Seeding failed half-way: `state` is kept so a close can release it; `error` is re-raised."""

    def __init__(self, state: AgentSessionState, *, error: BaseException) -> None:
        super().__init__(str(error))
        self.state = state
        self.error = error


@dataclass
class _AgentSessionRecord:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: AgentSessionState | None = None
    closing: bool = False
    episode_id: EpisodeId | None = None
    close_response: AgentCloseSessionResponse | None = None
    expires_at: float = float("inf")


class SessionsNeedOneWorker(APIError, ValueError):
    """A 400 answer, and the ValueError NeMo Gym raises there (its agents' tests expect that type)."""


class SimpleResponsesAPIAgent(AggregateMetricsMixin, BaseResponsesAPIAgent):
    config: BaseResponsesAPIAgentConfig
    _session_records: dict[str, _AgentSessionRecord] = PrivateAttr(default_factory=dict)
    _closed_session_records: OrderedDict[str, _AgentSessionRecord] = PrivateAttr(default_factory=OrderedDict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/v1/responses")(self.responses)
        # Environment servers call a rollout's loop under its id; the handler reads it from the path.
        app.post(f"/{ROLLOUT_PATH_PREFIX}/{{rollout_id}}/v1/responses")(self.responses)
        app.post(f"/{ROLLOUT_PATH_PREFIX}/{{rollout_id}}/{TOKEN_CAPTURE_PATH_SEGMENT}/v1/responses")(
            self.responses
        )
        app.post("/run")(self.run)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        app.post("/v1/agent_sessions")(self.seed_agent_session)
        app.post("/v1/agent_sessions/close")(self.close_agent_session)
        return app

    # ---- which features of the running config apply ------------------------------------
    def _global_config(self) -> Mapping[str, Any]:
        config = getattr(self.server_client, "global_config", None)
        if not isinstance(config, Mapping):
            config = getattr(self.server_client, "global_config_dict", None)
        return config if isinstance(config, Mapping) else {}

    def _model_call_capture_enabled(self) -> bool:
        """Whether the run collects observability records (`observability_enabled`)."""
        return bool(self._global_config().get(OBSERVABILITY_ENABLED_KEY_NAME, False))

    def _token_id_capture_enabled(self) -> bool:
        """Whether this agent takes part in training token capture (`token_id_capture` block)."""
        block = self._global_config().get(TOKEN_ID_CAPTURE_BLOCK) or {}
        if not isinstance(block, Mapping) or not block.get("enabled", False):
            return False
        return bool(block.get("all_agents", False)) or bool(getattr(self.config, "token_id_capture", False))

    def _capture_correlation_enabled(self) -> bool:
        return self._model_call_capture_enabled() or self._token_id_capture_enabled()

    # When the run correlates rollouts (observability or token capture), NeMo Gym agents built on
    # this base send their self-calls and model calls under `/ng-rollout/<id>/`; model servers
    # serve such a path as the bare route in the rollout's context. Otherwise nothing changes.
    def rollout_id_from_run(self, body: Any) -> str | None:
        """The rollout id of a `/run` body when the run correlates rollouts, else None."""
        if not self._capture_correlation_enabled():
            return None
        return maybe_rollout_id_from_run_body(body)

    def url_path_for_run(self, url_path: str, body: Any) -> str:
        prefix = rollout_path_prefix(
            self.rollout_id_from_run(body), token_capture=self._token_id_capture_enabled()
        )
        return prefix + url_path

    def base_url_for_run(self, base_url: str, body: Any) -> str:
        return apply_rollout_prefix(
            base_url, self.rollout_id_from_run(body), token_capture=self._token_id_capture_enabled()
        )

    def url_path_for_request(self, url_path: str, request: Any) -> str:
        """Carry the rollout prefix a request came in under onto a downstream path."""
        params = getattr(request, "path_params", None)
        rollout_id = params.get("rollout_id") if isinstance(params, Mapping) else None
        inbound = getattr(getattr(request, "url", None), "path", "") or ""
        token_capture = f"/{TOKEN_CAPTURE_PATH_SEGMENT}/" in inbound
        return rollout_path_prefix(rollout_id, token_capture=token_capture) + url_path

    def resolve_model_base_url(self, model_server_name: str, rollout_id: str | None = None) -> str:
        """The OpenAI-style base URL (ending in /v1) of a model server, under a rollout's prefix."""
        # Through the running config and `_build_server_base_url`, as NeMo Gym resolves it: its
        # agents' tests hand in a client that has only those two.
        config = self.server_client.global_config_dict
        if model_server_name not in config:
            raise KeyError(f"no server instance named {model_server_name!r} in the running config")
        block = get_first_server_config_dict(config, model_server_name)
        base = self.server_client._build_server_base_url(block)
        return f"{apply_rollout_prefix(base, rollout_id, token_capture=self._token_id_capture_enabled())}/v1"

    # ---- episode sessions ----------------------------------------------------------------
    @asynccontextmanager
    async def _locked_agent_session(self, session_id: str) -> AsyncIterator[_AgentSessionRecord]:
        now = monotonic()
        while self._closed_session_records:
            key, record = next(iter(self._closed_session_records.items()))
            if record.expires_at > now:
                break
            self._closed_session_records.pop(key)
            self._session_records.pop(key, None)
        while True:
            record = self._session_records.setdefault(session_id, _AgentSessionRecord())
            async with record.lock:
                if self._session_records.get(session_id) is not record:
                    continue  # replaced while we waited (a failed seed, an expired close)
                try:
                    yield record
                finally:
                    if record.state is None and record.close_response is None:
                        self._session_records.pop(session_id, None)
                return

    @staticmethod
    def _agent_session_id_from_request(request: Request | None) -> str | None:
        """The agent session a request's cookie is bound to, if any."""
        session = getattr(request, "scope", {}).get("session") if request is not None else None
        if not isinstance(session, Mapping) or AGENT_SESSION_COOKIE_KEY not in session:
            return None
        marker = session[AGENT_SESSION_COOKIE_KEY]
        if not isinstance(marker, str) or not marker:
            raise HTTPException(409, "the session cookie carries an invalid agent session marker")
        return marker

    def _require_agent_session(self, agent_session_id: str) -> AgentSessionState:
        record = self._session_records.get(agent_session_id)
        if record is None or record.state is None or record.closing:
            raise HTTPException(409, f"agent session {agent_session_id!r} is unknown or closing")
        return record.state

    def effective_tool_accesses(self, request: AgentSeedSessionRequest) -> list[ToolAccess]:
        """The configured grants with the session's own grants laid over them by name."""
        accesses = {access.name: access for access in self.config.tool_accesses}
        accesses.update((access.name, access) for access in request.tool_accesses)
        return list(accesses.values())

    def _supports_sessions(self) -> bool:
        return type(self)._seed_agent_session_state is not SimpleResponsesAPIAgent._seed_agent_session_state

    async def seed_agent_session(
        self, request: Request, body: AgentSeedSessionRequest
    ) -> AgentSeedSessionResponse:
        """Create the session once per id; an identical retry reuses it."""
        if not self._supports_sessions():
            raise APIError(501, f"{type(self).__name__} does not implement episode sessions")
        if self.config.process_count != 1:
            raise SessionsNeedOneWorker(
                400,
                f"agent sessions require num_workers=1 (one process holds them); this agent runs "
                f"{self.config.process_count}",
            )
        current = self._agent_session_id_from_request(request)
        if current is not None and current != body.agent_session_id:
            raise HTTPException(409, "agent_session_id does not match the session cookie")
        async with self._locked_agent_session(body.agent_session_id) as record:
            if record.close_response is not None:
                raise HTTPException(409, "the agent session is already closed")
            if record.closing:
                raise HTTPException(409, "the agent session is closing")
            if record.state is None:
                if current is not None:
                    raise HTTPException(409, "the agent session of this cookie has expired")
                record.episode_id = body.episode_id
                try:
                    record.state = await self._seed_agent_session_state(body.model_copy(deep=True))
                except AgentSessionSetupError as error:
                    record.state = error.state
                    record.closing = True
                    raise error.error from None
            elif record.state.request != body:
                raise HTTPException(409, "agent_session_id is already bound to a different seed request")
            request.scope["session"][AGENT_SESSION_COOKIE_KEY] = body.agent_session_id
            return AgentSeedSessionResponse(agent_session_id=body.agent_session_id)

    async def close_agent_session(
        self, request: Request, body: AgentCloseSessionRequest
    ) -> AgentCloseSessionResponse:
        """Release the session and answer with its observations; retries replay the answer."""
        if not self._supports_sessions():
            raise APIError(501, f"{type(self).__name__} does not implement episode sessions")
        current = self._agent_session_id_from_request(request)
        if current is not None and current != body.agent_session_id:
            raise HTTPException(409, "agent_session_id does not match the session cookie")
        async with self._locked_agent_session(body.agent_session_id) as record:
            if record.episode_id is not None and record.episode_id != body.episode_id:
                raise HTTPException(409, "episode_id does not match the seeded agent session")
            if record.close_response is not None:
                return record.close_response.model_copy(deep=True)
            if record.state is None:
                if current is not None:
                    raise HTTPException(409, "the close answer of this agent session has expired")
                # Closing an id never seeded still records the close, so a late seed is refused.
                result = AgentCloseSessionResponse(agent_session_id=body.agent_session_id)
            else:
                record.closing = True
                result = await self._close_agent_session_state(record.state)
            record.state = None
            record.episode_id = body.episode_id
            record.close_response = result.model_copy(deep=True)
            record.expires_at = monotonic() + self.config.session_close_retry_window_seconds
            self._closed_session_records[body.agent_session_id] = record
            # The marker stays, so a stale /v1/responses on this cookie cannot run outside the session.
            request.scope["session"][AGENT_SESSION_COOKIE_KEY] = body.agent_session_id
            return result

    async def _seed_agent_session_state(self, body: AgentSeedSessionRequest) -> AgentSessionState:
        """Check the grants and build the session's state (agents that support sessions override).

        When setup fails after acquiring something that needs releasing, raise
        `AgentSessionSetupError(partial_state, error=...)`: the state is kept for the close.
        """
        raise APIError(501, f"{type(self).__name__} does not implement episode sessions")

    async def _close_agent_session_state(self, state: AgentSessionState) -> AgentCloseSessionResponse:
        """Release the session's state; raise (keeping what is needed to retry) when that fails."""
        raise APIError(501, f"{type(self).__name__} does not implement episode sessions")

    # ---- the routes every agent defines --------------------------------------------------
    async def responses(self, body: NeMoGymResponseCreateParamsNonStreaming = Body()) -> NeMoGymResponse:
        raise TypeError(f"{type(self).__name__} does not define responses()")

    async def run(self, body: BaseRunRequest = Body()) -> BaseVerifyResponse:
        raise TypeError(f"{type(self).__name__} does not define run()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:
        if self.config.skip_verification:
            return AggregateMetrics()
        return self.aggregate_with_hooks(body.verify_responses)


__all__ = [
    "AGENT_SESSION_COOKIE_KEY",
    "AgentCloseSessionRequest",
    "AgentCloseSessionResponse",
    "AgentSeedSessionRequest",
    "AgentSeedSessionResponse",
    "AgentSessionSetupError",
    "AgentSessionState",
    "BaseResponsesAPIAgent",
    "BaseResponsesAPIAgentConfig",
    "Body",
    "SimpleResponsesAPIAgent",
]
