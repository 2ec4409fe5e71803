"""Base for agents: `/v1/responses` (the agent loop) and `/run` (seed → loop → verify)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from nemo_gym.server.base import BaseServer, BaseServerConfig
from nemo_gym.server.json_io import json_response, read_json_object


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    pass


class SimpleResponsesAPIAgent(BaseServer):
    config_class = BaseResponsesAPIAgentConfig

    async def responses(self, body: dict[str, Any], cookies: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError  # each agent defines its loop

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # each agent defines its episode

    def add_routes(self, app: FastAPI) -> None:
        async def responses(request: Request) -> Response:
            return json_response(await self.responses(await read_json_object(request), dict(request.cookies)))

        async def run(request: Request) -> Response:
            return json_response(await self.run(await read_json_object(request)))

        app.add_api_route("/v1/responses", responses, methods=["POST"])
        app.add_api_route("/run", run, methods=["POST"])
