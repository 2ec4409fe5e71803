"""single_agent_turn: one agent answers one task, a resources server scores it.

An episode:
1. seeds a resources session under an id this server assigns (`/seed_session` with a
   `ResourcesSeedSessionRequest`) and takes its session cookie;
2. seeds an agent session (`/v1/agent_sessions`) granting the resources server's tools
   (`resources_tool_transports`: `direct_http` and/or `mcp`) and any sandbox the seed returned;
3. runs the agent once (`/ng-rollout/<capture key>/v1/responses`);
4. closes the agent session, which returns the agent's observations and final resources cookies;
5. verifies on the resources server with the task's own fields, exactly as an agent's `/run` would;
6. closes the resources session (and, on any failure, whatever was opened).

The result is the verify answer plus `ng_agent_observations`. A failure names its stage and
whether retrying can help (connection errors, 408/425/429 and 5xx can; anything else cannot).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from uuid import uuid4

from aiohttp import ClientConnectionError, ClientPayloadError, ClientResponseError
from fastapi import Body
from pydantic import BaseModel, Field, PositiveFloat, PositiveInt

from nemo_gym.base_environment_server import (
    BaseEnvironmentServer,
    BaseEnvironmentServerConfig,
    CleanupContext,
    HandledEpisodeError,
)
from nemo_gym.base_resources_server import (
    ResourcesCloseSessionRequest,
    ResourcesSeedSessionRequest,
    ResourcesSeedSessionResponse,
)
from nemo_gym.base_responses_api_agent import (
    AgentCloseSessionRequest,
    AgentCloseSessionResponse,
    AgentSeedSessionRequest,
    AgentSeedSessionResponse,
)
from nemo_gym.config_types import (
    ROLLOUT_PATH_PREFIX,
    TOKEN_CAPTURE_PATH_SEGMENT,
    AgentServerRef,
    AggregateMetrics,
    AggregateMetricsRequest,
    ResourcesServerRef,
)
from nemo_gym.global_config import TOKEN_ID_CAPTURE_BLOCK, get_first_server_config_dict
from nemo_gym.openai_utils import NeMoGymResponse
from nemo_gym.server_utils import get_response_json, raise_for_status
from nemo_gym.single_agent_turn_types import (
    SingleAgentTurnFailure,
    SingleAgentTurnRequest,
    SingleAgentTurnResponse,
    SingleAgentTurnResult,
)
from nemo_gym.tool_access import DirectHTTPToolAccess, MCPStreamableHTTPConnection, MCPToolAccess, ToolAccess

_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class SingleAgentTurnEnvironmentServerConfig(BaseEnvironmentServerConfig):
    resources_server: ResourcesServerRef
    agent_server: AgentServerRef
    resources_tool_transports: list[Literal["direct_http", "mcp"]] = Field(default_factory=list)
    max_concurrent_episodes: PositiveInt | None = None
    queue_timeout_seconds: PositiveFloat | None = None
    default_episode_timeout_seconds: PositiveFloat | None = 21600
    cleanup_timeout_seconds: PositiveFloat = 180


def _cookies(response: Any) -> dict[str, str]:
    return {str(name): str(morsel.value) for name, morsel in response.cookies.items()}


def is_retryable(error: BaseException) -> bool:
    """Whether the same episode may succeed if tried again (a transient dependency failure)."""
    if isinstance(error, ClientResponseError):
        return error.status in _RETRYABLE_STATUSES or error.status >= 500
    return isinstance(error, ClientConnectionError | ClientPayloadError | TimeoutError)


def _failure(stage: str, error: BaseException | str, *, partial_response: Any = None) -> HandledEpisodeError:
    reason = error if isinstance(error, str) else str(error) or type(error).__name__
    terminal = True if isinstance(error, str) else not is_retryable(error)
    return HandledEpisodeError(
        SingleAgentTurnFailure(
            stage=stage,  # type: ignore[arg-type]
            failure_reason=reason[:2000],
            terminal=terminal,
            partial_response=partial_response,
        )
    )


@dataclass
class _Episode:
    """One episode's session ids and the cookies each session carries, as they change."""

    request: SingleAgentTurnRequest
    resources_session_id: str = field(default_factory=lambda: f"resources-session-{uuid4().hex}")
    agent_session_id: str = field(default_factory=lambda: f"agent-session-{uuid4().hex}")
    resources_cookies: dict[str, str] = field(default_factory=dict)
    agent_cookies: dict[str, str] = field(default_factory=dict)
    closed: AgentCloseSessionResponse | None = None


class SingleAgentTurnEnvironmentServer(
    BaseEnvironmentServer[SingleAgentTurnRequest, SingleAgentTurnResponse]
):
    config: SingleAgentTurnEnvironmentServerConfig
    request_model: ClassVar[type[SingleAgentTurnRequest]] = SingleAgentTurnRequest
    response_model: ClassVar[type[SingleAgentTurnResponse]] = SingleAgentTurnResponse

    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:
        """The resources server verifies in this protocol, so it aggregates too."""
        response = await self.server_client.post(
            self.config.resources_server.name, "/aggregate_metrics", json=body
        )
        await raise_for_status(response)
        return AggregateMetrics.model_validate(await get_response_json(response))

    def _agent_responses_path(self, request: SingleAgentTurnRequest) -> str:
        config = self.server_client.global_config_dict
        block = config.get(TOKEN_ID_CAPTURE_BLOCK) or {}
        agent = get_first_server_config_dict(config, self.config.agent_server.name)
        token_capture = bool(block.get("enabled", False)) and (
            bool(block.get("all_agents", False)) or bool(agent.get("token_id_capture", False))
        )
        segment = f"/{TOKEN_CAPTURE_PATH_SEGMENT}" if token_capture else ""
        return f"/{ROLLOUT_PATH_PREFIX}/{request.episode_id.capture_key}{segment}/v1/responses"

    def _tool_accesses(
        self, seed: ResourcesSeedSessionResponse, base_url: str, cookies: dict[str, str]
    ) -> list[ToolAccess]:
        accesses: list[ToolAccess] = []
        transports = self.config.resources_tool_transports
        if "direct_http" in transports:
            accesses.append(
                DirectHTTPToolAccess(
                    name=f"{self.config.resources_server.name}.direct_http",
                    required=True,
                    base_url=base_url,  # type: ignore[arg-type]
                    cookies=cookies,
                )
            )
        if "mcp" in transports:
            if seed.resources_tools is None:
                raise _failure(
                    "seed",
                    "the resources seed returned no MCP metadata, but resources_tool_transports asks for mcp",
                )
            if seed.resources_tools.transport != "http":
                raise _failure(
                    "seed", f"unsupported resources MCP transport: {seed.resources_tools.transport}"
                )
            accesses.append(
                MCPToolAccess(
                    name=seed.resources_tools.server_name,
                    required=True,
                    connection=MCPStreamableHTTPConnection(
                        url=f"{base_url}/{seed.resources_tools.url_path.lstrip('/')}",  # type: ignore[arg-type]
                        headers=seed.resources_tools.headers,
                    ),
                )
            )
        return accesses

    async def run(self, request: SingleAgentTurnRequest, cleanup: CleanupContext) -> SingleAgentTurnResponse:
        episode = _Episode(request)
        # Registered before the seed: a seed whose answer is lost still gets closed.
        resources_cleanup = cleanup.register_cleanup(
            "resources session", functools.partial(self._close_resources, episode)
        )
        try:
            seed = await self._seed_resources(episode)
        except HandledEpisodeError:
            raise
        except Exception as error:
            raise _failure("seed", error) from error

        resources = self.config.resources_server.name
        base_url = self.server_client._resolve_base_url(resources).rstrip("/")
        tool_accesses = self._tool_accesses(seed, base_url, episode.resources_cookies)
        agent_cleanup = cleanup.register_cleanup(
            "agent session", functools.partial(self._close_agent, episode)
        )
        try:
            await self._seed_agent(episode, tool_accesses, seed)
            agent_response = await self._run_agent(episode)
        except Exception as error:
            raise _failure("agent", error) from error

        # The close carries the observations and the final resources cookies verification needs.
        try:
            await agent_cleanup.close()
        except Exception as error:
            raise _failure("cleanup", error, partial_response=agent_response) from error
        try:
            verification = await self._verify(episode, agent_response)
        except Exception as error:
            raise _failure("verification", error, partial_response=agent_response) from error

        # A verdict is final: a failing resources close only gets one more try during unwinding.
        cleanup.register_cleanup("resources session after verification", resources_cleanup.close)
        observations = episode.closed.agent_observations if episode.closed is not None else None
        return SingleAgentTurnResponse(
            episode_id=request.episode_id,
            task_id=request.task.task_id,
            result=verification.model_copy(update={"ng_agent_observations": observations}),
        )

    async def _post(self, server: str, path: str, body: Any, cookies: dict[str, str] | None = None) -> Any:
        """POST to a server (a pydantic body as its JSON); an error status raises; the reply comes
        back for its cookies and JSON."""
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        reply = await self.server_client.post(server, path, json=body, cookies=cookies)
        await raise_for_status(reply)
        return reply

    async def _seed_resources(self, episode: _Episode) -> ResourcesSeedSessionResponse:
        request = episode.request
        reply = await self._post(
            self.config.resources_server.name,
            "/seed_session",
            ResourcesSeedSessionRequest(
                resources_session_id=episode.resources_session_id,
                episode_id=request.episode_id,
                task_id=request.task.task_id,
                task_data=request.task.task_input.task_data,
            ),
        )
        episode.resources_cookies = _cookies(reply)
        if not episode.resources_cookies:
            raise ValueError("the resources seed set no session cookie")
        seed = ResourcesSeedSessionResponse.model_validate(await get_response_json(reply))
        if seed.resources_session_id != episode.resources_session_id:
            raise ValueError("the resources seed answered for a different resources_session_id")
        return seed

    async def _close_resources(self, episode: _Episode) -> None:
        await self._post(
            self.config.resources_server.name,
            "/close_session",
            ResourcesCloseSessionRequest(
                resources_session_id=episode.resources_session_id, episode_id=episode.request.episode_id
            ),
            episode.resources_cookies,
        )

    async def _seed_agent(
        self, episode: _Episode, tool_accesses: list[ToolAccess], seed: ResourcesSeedSessionResponse
    ) -> None:
        reply = await self._post(
            self.config.agent_server.name,
            "/v1/agent_sessions",
            AgentSeedSessionRequest(
                agent_session_id=episode.agent_session_id,
                episode_id=episode.request.episode_id,
                task_id=episode.request.task.task_id,
                tool_accesses=tool_accesses,
                sandbox_access=seed.sandbox_access,
            ),
        )
        seeded = AgentSeedSessionResponse.model_validate(await get_response_json(reply))
        if seeded.agent_session_id != episode.agent_session_id:
            raise ValueError("the agent seeded a different agent_session_id")
        episode.agent_cookies = _cookies(reply)

    async def _run_agent(self, episode: _Episode) -> NeMoGymResponse:
        reply = await self._post(
            self.config.agent_server.name,
            self._agent_responses_path(episode.request),
            # As the server client sends a model body: only the fields the task set.
            episode.request.task.task_input.responses_create_params.model_dump(
                mode="json", exclude_unset=True
            ),
            episode.agent_cookies,
        )
        episode.agent_cookies = _cookies(reply) or episode.agent_cookies
        return NeMoGymResponse.model_validate(await get_response_json(reply))

    async def _close_agent(self, episode: _Episode) -> None:
        """The agent's close returns its observations and the resources cookies it ended with."""
        reply = await self._post(
            self.config.agent_server.name,
            "/v1/agent_sessions/close",
            AgentCloseSessionRequest(
                agent_session_id=episode.agent_session_id, episode_id=episode.request.episode_id
            ),
            episode.agent_cookies,
        )
        episode.closed = closed = AgentCloseSessionResponse.model_validate(await get_response_json(reply))
        if closed.agent_session_id != episode.agent_session_id:
            raise ValueError("the agent closed a different agent_session_id")
        if closed.resources_cookies is not None:
            episode.resources_cookies = closed.resources_cookies

    async def _verify(self, episode: _Episode, agent_response: NeMoGymResponse) -> SingleAgentTurnResult:
        """The resources server's verdict, from the task's own fields as an agent's `/run` sends them."""
        task_input = episode.request.task.task_input
        verify_body = {
            **task_input.task_data,
            "responses_create_params": task_input.responses_create_params.model_dump(
                mode="json", exclude_unset=True
            ),
            "response": agent_response.model_dump(mode="json"),
        }
        reply = await self._post(
            self.config.resources_server.name, "/verify", verify_body, episode.resources_cookies
        )
        return SingleAgentTurnResult.model_validate(await get_response_json(reply))


if __name__ == "__main__":
    SingleAgentTurnEnvironmentServer.run_webserver()
