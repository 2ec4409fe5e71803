"""Pass-through model server for any OpenAI-compatible endpoint (OpenAI itself, or a proxy).

Same endpoints as vllm_model, so switching a config between the two changes nothing for
agents. The configured model always replaces the caller's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from pydantic import Field, field_validator
from starlette.responses import Response

from nemo_gym.exceptions import check_header_value
from nemo_gym.server.base import BaseServerConfig
from nemo_gym.server.errors import APIError
from nemo_gym.server.json_io import json_response, read_json_object
from nemo_gym.server.sessions import SESSION_ID_KEY
from nemo_gym.upstream.config import Timeouts, UpstreamConfig
from nemo_gym.upstream.model_server import PooledModelServer


class OpenAIModelConfig(BaseServerConfig):
    strict_keys: ClassVar[bool] = True
    openai_base_url: str
    openai_api_key: str
    openai_model: str
    max_retries: int = Field(default=3, ge=0)
    connect_timeout: float = 10.0
    read_timeout: float | None = None
    ssl_verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("openai_api_key")
    @classmethod
    def _key_fits_in_a_header(cls, value: str) -> str:
        check_header_value("authorization", value)
        return value


SimpleModelServerConfig = OpenAIModelConfig  # NeMo Gym's name for this server's config


class OpenAIModel(PooledModelServer):
    config: OpenAIModelConfig

    def upstream_config(self) -> UpstreamConfig:
        config = self.config
        return UpstreamConfig(
            base_url=[config.openai_base_url],
            api_key=config.openai_api_key,
            max_retries=config.max_retries,
            timeouts=Timeouts(connect=config.connect_timeout, read=config.read_timeout),
            # A public endpoint: a well-kept client that honours proxy variables and CA options.
            upstream_client="aiohttp",
            ssl_verify=config.ssl_verify,
            ca_bundle=config.ca_bundle,
            client_cert=config.client_cert,
            client_key=config.client_key,
        )

    async def forward(self, path: str, body: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        if body.get("stream"):
            raise APIError(
                400, "streaming is not supported by this server; send stream=false", param="stream"
            )
        data, _ = await self.pool.post(
            path, {**body, "model": self.config.openai_model}, session_id=session_id
        )
        return data

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()

        async def responses(request: Request) -> Response:
            body = await read_json_object(request)
            return json_response(
                await self.forward("/responses", body, request.scope["session"][SESSION_ID_KEY])
            )

        async def chat_completions(request: Request) -> Response:
            body = await read_json_object(request)
            return json_response(
                await self.forward("/chat/completions", body, request.scope["session"][SESSION_ID_KEY])
            )

        app.add_api_route("/v1/responses", responses, methods=["POST"])
        app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
        return app


if __name__ == "__main__":
    OpenAIModel.run_webserver()
