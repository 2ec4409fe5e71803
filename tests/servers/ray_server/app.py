"""A resources server whose tool runs in a Ray task, for the Ray tests (NeMo Gym style)."""

from __future__ import annotations

import os

import ray
from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


@ray.remote
def square(x: int) -> dict[str, int]:
    return {"value": x * x, "pid": os.getpid()}


class SquareRequest(BaseModel):
    x: int


class RaySquareServer(SimpleResourcesServer):
    config: BaseResourcesServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/square")(self.square)
        return app

    async def square(self, body: SquareRequest) -> dict:
        result = await square.remote(body.x)
        return {**result, "server_pid": os.getpid(), "address": ray.get_runtime_context().gcs_address}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)


if __name__ == "__main__":
    RaySquareServer.run_webserver()
