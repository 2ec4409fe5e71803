"""legacy_agent: an environment server that relays `/run` to one agent, unchanged.

It lets rollout collection reach an agent that still runs its own episodes (seed → loop →
verify in the agent's `/run`) through an environment server, as NeMo Gym 0.7.0 configs declare
for every agent. The body, cookies, status and headers pass through as they are (connection
and framing headers excepted); `/aggregate_metrics` goes to the agent too. The episode limits
of the base do not apply: the agent keeps its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import Body, FastAPI, Request, Response
from pydantic import PositiveFloat, PositiveInt, model_validator

from nemo_gym.base_environment_server import (
    BaseEnvironmentServer,
    BaseEnvironmentServerConfig,
    CleanupContext,
)
from nemo_gym.config_types import AgentServerRef, AggregateMetrics, AggregateMetricsRequest
from nemo_gym.episode_types import BaseEpisodeRequest, BaseEpisodeResponse
from nemo_gym.server_utils import get_response_json, raise_for_status

logger = logging.getLogger(__name__)

_LIMIT_KEYS = frozenset(
    {
        "max_concurrent_episodes",
        "queue_timeout_seconds",
        "default_episode_timeout_seconds",
        "cleanup_timeout_seconds",
    }
)
# Hop-by-hop and framing headers belong to each connection, not to the relayed message.
_NOT_RELAYED = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "cookie",
        "host",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
    }
)


def relayed_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _NOT_RELAYED]


class LegacyAgentEnvironmentServerConfig(BaseEnvironmentServerConfig):
    agent_server: AgentServerRef
    # Declared by the base; a relay enforces none of them.
    max_concurrent_episodes: PositiveInt | None = None
    queue_timeout_seconds: PositiveFloat | None = None
    default_episode_timeout_seconds: PositiveFloat = 21600
    cleanup_timeout_seconds: PositiveFloat = 180

    @model_validator(mode="after")
    def _note_unused_limits(self) -> LegacyAgentEnvironmentServerConfig:
        given = sorted(_LIMIT_KEYS & self.model_fields_set)
        if given:
            logger.warning(
                "%s sets %s, which a relay does not apply", self.name or "legacy_agent", ", ".join(given)
            )
        return self


class LegacyAgentEnvironmentServer(BaseEnvironmentServer):
    config: LegacyAgentEnvironmentServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super(BaseEnvironmentServer, self).setup_webserver()
        app.post("/run")(self.run_legacy)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        return app

    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:
        """The agent aggregates its own rollouts."""
        response = await self.server_client.post(
            self.config.agent_server.name, "/aggregate_metrics", json=body
        )
        await raise_for_status(response)
        return AggregateMetrics.model_validate(await get_response_json(response))

    async def run(
        self, request: BaseEpisodeRequest[Any], cleanup: CleanupContext
    ) -> BaseEpisodeResponse[Any]:
        raise RuntimeError("legacy_agent relays /run to its agent and has no typed episode protocol")

    async def run_legacy(self, request: Request) -> Response:
        """One `/run` to the agent, and its answer back as it came."""
        upstream = await self.server_client.post(
            self.config.agent_server.name,
            "/run",
            data=await request.body(),
            headers=dict(relayed_headers(request.headers.items())),
            cookies=request.cookies,
        )
        body = await upstream.read()
        response = Response(content=body, status_code=upstream.status)
        # Raw headers keep repeated fields (several Set-Cookie) intact.
        response.raw_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in relayed_headers(upstream.headers.items())
        ]
        response.raw_headers.append((b"content-length", str(len(body)).encode("latin-1")))
        return response


if __name__ == "__main__":
    LegacyAgentEnvironmentServer.run_webserver()
