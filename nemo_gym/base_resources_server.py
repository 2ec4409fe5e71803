"""Base for resources servers: tools as POST endpoints, plus `/seed_session`, `/verify`
and `/aggregate_metrics`.

Routes are the server's own bound methods, so FastAPI validates each body against the type
the subclass annotates (`verify(self, body: MyVerifyRequest)`), with or without a
`request: Request` parameter, exactly as NeMo Gym environments are written.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.reward_profile import AggregateMetricsMixin
from nemo_gym.server.base import BaseServerConfig, SimpleServer

# Keys under which MCP metadata and session tokens travel in NeMo Gym (kept for imports).
NEMO_GYM_MCP_SESSION_TOKEN_HEADER = "X-NeMo-Gym-Session-Token"
NEMO_GYM_MCP_METADATA_KEY = "mcp"


class ReverifyMode(str, Enum):  # noqa: UP042 -- NeMo Gym compares and prints it as (str, Enum)
    STATELESS = "stateless"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


class BaseResourcesServerConfig(BaseServerConfig):
    expose_tools_over_mcp: bool = False
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.UNKNOWN


class BaseRunRequest(BaseModel):
    """A dataset row as the agent's `/run` receives it. As in NeMo Gym, fields a subclass does
    not declare are dropped (environments' own tests assert exact field sets); an agent that
    forwards whole rows declares `extra="allow"` on its own request type."""

    model_config = ConfigDict(populate_by_name=True)

    responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    capture_rollout_id: str | None = Field(default=None, alias="_ng_rollout_id", exclude=True)


class BaseVerifyRequest(BaseRunRequest):
    response: NeMoGymResponse


class BaseVerifyResponse(BaseVerifyRequest):
    reward: float
    # True when the reward is not a valid measurement (the environment failed, not the model).
    mask_sample: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None


class BaseMultiRewardVerifyResponse(BaseVerifyResponse):
    reward_components: dict[str, float]


class BaseSeedSessionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseSeedSessionResponse(BaseModel):
    pass


class SimpleResourcesServer(AggregateMetricsMixin, SimpleServer):
    config: BaseResourcesServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/seed_session")(self.seed_session)
        app.post("/verify")(self.verify)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        app.get("/reverify_mode")(self.get_reverify_mode)
        return app

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        """Prepare per-rollout state (keyed by `request.session[SESSION_ID_KEY]`); default: none."""
        return BaseSeedSessionResponse()

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        """Score a finished rollout. Every resources server overrides this."""
        raise TypeError(f"{type(self).__name__} does not define verify()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        return self.aggregate_with_hooks(body.verify_responses)

    async def get_reverify_mode(self) -> ReverifyMode:
        return self.config.REVERIFY_MODE


__all__ = [
    "NEMO_GYM_MCP_METADATA_KEY",
    "NEMO_GYM_MCP_SESSION_TOKEN_HEADER",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseMultiRewardVerifyResponse",
    "BaseResourcesServerConfig",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    "ReverifyMode",
    "SimpleResourcesServer",
]
