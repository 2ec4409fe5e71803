"""Base for agents: `/v1/responses` (the agent loop), `/run` (seed → loop → verify) and
`/aggregate_metrics`.

As for resources servers, the routes are bound methods, so an agent's own annotations on
`responses(self, request, response, body)` and `run(self, request, body)` decide what
FastAPI validates and injects.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI
from pydantic import Field

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyResponse
from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.reward_profile import AggregateMetricsMixin
from nemo_gym.server.base import BaseServerConfig, SimpleServer


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    skip_verification: bool = False
    skip_verification_reward: float = 0.0
    session_close_retry_window_seconds: float = Field(default=300, gt=0)
    token_id_capture: bool = False


class SimpleResponsesAPIAgent(AggregateMetricsMixin, SimpleServer):
    config: BaseResponsesAPIAgentConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/v1/responses")(self.responses)
        app.post("/run")(self.run)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        return app

    # NeMo Gym can route a rollout's model calls through rollout-id path prefixes for tracing;
    # our servers have no such routes, so paths and URLs stay as they are.
    def url_path_for_run(self, url_path: str, body: Any) -> str:
        return url_path

    def url_path_for_request(self, url_path: str, request: Any) -> str:
        return url_path

    def base_url_for_run(self, base_url: str, body: Any) -> str:
        return base_url

    def rollout_id_from_run(self, body: Any) -> str | None:
        return getattr(body, "capture_rollout_id", None)

    def resolve_model_base_url(self, model_server_name: str, rollout_id: str | None = None) -> str:
        """The OpenAI-style base URL (ending in /v1) of a model server of the running config."""
        return f"{self.server_client.url_for(model_server_name)}/v1"

    async def responses(self, body: NeMoGymResponseCreateParamsNonStreaming = Body()) -> NeMoGymResponse:
        raise TypeError(f"{type(self).__name__} does not define responses()")

    async def run(self, body: BaseRunRequest = Body()) -> BaseVerifyResponse:
        raise TypeError(f"{type(self).__name__} does not define run()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:
        if self.config.skip_verification:
            return AggregateMetrics()
        return self.aggregate_with_hooks(body.verify_responses)


__all__ = ["BaseResponsesAPIAgentConfig", "Body", "SimpleResponsesAPIAgent"]
