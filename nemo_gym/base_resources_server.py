"""Base for resources servers: tools as POST endpoints, plus `/seed_session`, `/close_session`,
`/verify` and `/aggregate_metrics`.

Routes are the server's own bound methods, so FastAPI validates each body against the type
the subclass annotates (`verify(self, body: MyVerifyRequest)`), with or without a
`request: Request` parameter, exactly as NeMo Gym environments are written.

Two callers seed sessions: an agent's `/run` sends the dataset row (a legacy seed, answered
with an empty body), and an environment server sends a `ResourcesSeedSessionRequest` naming
the session it assigns (answered with that id) and later closes it at `/close_session`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.episode_types import ClosedModel, EpisodeId, TaskId
from nemo_gym.failure_kinds import FailureKind
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.reward_profile import AggregateMetricsMixin
from nemo_gym.rollout_correlation import RolloutContextMiddleware
from nemo_gym.server.base import NEMO_GYM_VALIDATION_STATUS, BaseServerConfig, SimpleServer

try:
    from nemo_gym.sandbox.access import SandboxAccess
except ImportError:  # without the sandbox package, a grant travels as its JSON object
    SandboxAccess = dict[str, JsonValue]  # type: ignore[misc]

# Keys under which MCP metadata and session tokens travel in NeMo Gym (kept for imports).
NEMO_GYM_MCP_SESSION_TOKEN_HEADER = "X-NeMo-Gym-Session-Token"
NEMO_GYM_MCP_METADATA_KEY = "mcp"
# Tool names that would shadow a resources server's own routes.
RESERVED_MCP_TOOL_NAMES = frozenset({"verify", "seed_session", "close_session", "aggregate_metrics", "mcp"})


def normalize_tool_name(name: str, server_name: str | None = None) -> str:
    """A trajectory's tool name as the server knows it: `mcp__<server>__<tool>` → `<tool>`.

    MCP clients namespace tool names per server while HTTP agents record bare names; verifiers
    compare against bare names, so both transports score alike. With `server_name`, only that
    server's namespace is stripped.
    """
    if not name.startswith("mcp__"):
        return name
    if server_name is not None:
        prefix = f"mcp__{server_name}__"
        return name[len(prefix) :] if name.startswith(prefix) else name
    _, separator, tool = name[len("mcp__") :].partition("__")
    return tool if separator else name


class ReverifyMode(str, Enum):  # noqa: UP042 -- NeMo Gym compares and prints it as (str, Enum)
    STATELESS = "stateless"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


class BaseResourcesServerConfig(BaseServerConfig):
    expose_tools_over_mcp: bool = False
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.UNKNOWN


class BaseResourcesServer(SimpleServer):
    config: BaseResourcesServerConfig
    validation_status: ClassVar[int] = NEMO_GYM_VALIDATION_STATUS


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
    failure_kind: FailureKind = None
    failure_reason: str | None = None


class BaseMultiRewardVerifyResponse(BaseVerifyResponse):
    reward_components: dict[str, float]


class BaseSeedSessionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseSeedSessionResponse(BaseModel):
    pass


class MCPServerMetadata(BaseModel):
    """How an agent reaches this server's tools over MCP for one session."""

    server_name: str
    url_path: str = "/mcp"
    transport: str = "http"
    headers: dict[str, str]


class ResourcesSeedSessionRequest(ClosedModel):
    """An environment server's seed: create (idempotently) the session it names.

    Seeding the same id for the same episode again returns the same session; a session closed
    before its seed arrives must not be created by that late seed.
    """

    resources_session_id: str = Field(min_length=1)
    episode_id: EpisodeId
    task_id: TaskId
    task_data: dict[str, JsonValue]


class ResourcesSeedSessionResponse(ClosedModel):
    """The seeded session, and optional tool or sandbox access for the agent."""

    resources_session_id: str
    resources_tools: MCPServerMetadata | None = None
    sandbox_access: SandboxAccess | None = None


VerificationInputT = TypeVar("VerificationInputT")


class ResourcesVerifyRequest(ClosedModel, Generic[VerificationInputT]):
    """An environment's typed output, sent to a resources server for scoring."""

    episode_id: EpisodeId
    task_id: TaskId
    verification_input: VerificationInputT


class ResourcesCloseSessionRequest(ClosedModel):
    resources_session_id: str
    episode_id: EpisodeId


class ResourcesCloseSessionResponse(ClosedModel):
    resources_session_id: str


class SimpleResourcesServer(AggregateMetricsMixin, BaseResourcesServer):
    config: BaseResourcesServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        # Calls may come under a rollout prefix (`/ng-rollout/<id>/verify`), as NeMo Gym's clients send them.
        app.add_middleware(RolloutContextMiddleware)
        app.post("/seed_session")(self.seed_session)
        app.post("/close_session")(self.close_resources_session)
        app.post("/verify")(self.verify)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        app.get("/reverify_mode")(self.get_reverify_mode)
        return app

    def normalize_tool_name(self, name: str) -> str:
        """Strip this server's own MCP namespace from a trajectory tool name."""
        return normalize_tool_name(name, self.config.name or type(self).__name__)

    def mcp_tools(self, harvested: list[Any], catchall: Any | None) -> list[Any] | None:
        """The tools to expose over MCP (NeMo Gym's hook; this framework serves no MCP)."""
        return harvested

    def mcp_allowed_tools_for_session(self, seed_body: dict[str, Any]) -> list[str] | None:
        """Tool names one session may use over MCP; None allows all (NeMo Gym's hook)."""
        return None

    async def seed_session(
        self, body: ResourcesSeedSessionRequest | BaseSeedSessionRequest
    ) -> ResourcesSeedSessionResponse | BaseSeedSessionResponse:
        """Prepare per-rollout state (keyed by `request.session[SESSION_ID_KEY]`); default: none.

        An environment server's seed gets its own session id back; an agent's gets an empty body.
        """
        if isinstance(body, ResourcesSeedSessionRequest):
            return ResourcesSeedSessionResponse(resources_session_id=body.resources_session_id)
        return BaseSeedSessionResponse()

    async def close_resources_session(
        self, body: ResourcesCloseSessionRequest
    ) -> ResourcesCloseSessionResponse:
        """Release what an environment server's seed created (`/close_session`); default: nothing.

        An override succeeds for a session already closed or never seeded, stops a later seed of
        the same id from creating it, and raises (so the caller retries) when releasing fails.
        """
        return ResourcesCloseSessionResponse(resources_session_id=body.resources_session_id)

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
    "RESERVED_MCP_TOOL_NAMES",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseMultiRewardVerifyResponse",
    "BaseResourcesServer",
    "BaseResourcesServerConfig",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    "MCPServerMetadata",
    "ResourcesCloseSessionRequest",
    "ResourcesCloseSessionResponse",
    "ResourcesSeedSessionRequest",
    "ResourcesSeedSessionResponse",
    "ResourcesVerifyRequest",
    "ReverifyMode",
    "SandboxAccess",
    "SimpleResourcesServer",
    "normalize_tool_name",
]
