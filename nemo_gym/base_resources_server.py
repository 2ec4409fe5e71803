"""Base for resources servers: tools as POST endpoints, plus `/seed_session` and `/verify`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from nemo_gym.server.base import BaseServer, BaseServerConfig
from nemo_gym.server.json_io import json_response, read_json_object


class BaseResourcesServerConfig(BaseServerConfig):
    pass


class BaseVerifyRequest(BaseModel):
    """A row's fields (passed through) plus the agent's final `response`."""

    model_config = ConfigDict(extra="allow")

    responses_create_params: dict[str, Any]
    response: dict[str, Any]


class SimpleResourcesServer(BaseServer):
    config_class = BaseResourcesServerConfig

    async def seed_session(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """Prepare per-rollout state (keyed by the session cookie). Default: nothing."""
        return {}

    async def verify(self, request: Request, body: BaseVerifyRequest) -> dict[str, Any]:
        """Score a finished rollout: return the request plus at least `reward`."""
        raise NotImplementedError  # every concrete resources server defines its verifier

    def add_tool_routes(self, app: FastAPI) -> None:
        """Register the tool endpoints (`POST /<tool name>`)."""

    def add_routes(self, app: FastAPI) -> None:
        async def seed_session(request: Request) -> Response:
            return json_response(await self.seed_session(request, await read_json_object(request)))

        async def verify(request: Request) -> Response:
            body = BaseVerifyRequest.model_validate(await read_json_object(request))
            return json_response(await self.verify(request, body))

        app.add_api_route("/seed_session", seed_session, methods=["POST"])
        app.add_api_route("/verify", verify, methods=["POST"])
        self.add_tool_routes(app)
